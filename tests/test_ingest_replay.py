"""A run ingested from a databroker-pack directory (an ophyd v1 Pilatus writing AD_HDF5
files, packed by suitcase-msgpack in databroker-pack's layout) is a raw run like any
other: ``xrd-bluesky replay`` with ``--purpose`` and ``--poni`` integrates its frames,
read where the pack's files are, and the CeO2 rings the simulator rendered into them
land where the true geometry puts them."""

from __future__ import annotations

import uuid

import numpy as np
import pyFAI.calibrant
from devices.ophyd_v1_detector import make_fake_pilatus
from pack_builders import image_run, write_pack
from tiled.queries import Contains

from xrd_bluesky.cli import main
from xrd_bluesky.cli.ingest import ingest
from xrd_bluesky.science.reduction.peak_fitting import fit_peak
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.units import two_theta_rad
from xrd_bluesky.sim_devices import BeamlineConfig
from xrd_bluesky.sources.pack import open_pack

DETECTOR = "Pilatus1M"
FRAMES = 2


class CeO2Frames:
    """Frames of CeO2 as the simulator renders them at its true geometry (Poisson photons
    x a simulated detector's gain, dark and noise), for the fake IOC to write."""

    def __init__(self, config: BeamlineConfig, seed: int = 3):
        self.poni = config.true_geometry().reference
        self.photons = expected_photons(default_library()["CeO2"], self.poni, flux_ph_s=config.flux_ph_s,
                                        exposure_s=1.0, beamstop=config.beamstop,
                                        polarization_factor=config.polarization_factor)
        self.response = DetectorResponse.simulate(config.detector, seed)
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> np.ndarray:
        return detect(self.photons, self.response, 1.0, self.rng)


def ceo2_rings(wavelength_m: float, n: int = 6) -> np.ndarray:
    """2theta (deg) of CeO2's first ``n`` rings."""
    d = np.array(pyFAI.calibrant.get_calibrant("CeO2").get_dSpacing()[:n])
    return np.degrees(two_theta_rad(d, wavelength_m))


def test_an_ingested_pack_run_replays_and_its_rings_are_where_the_truth_puts_them(
        RE, catalog, beamline_data, monkeypatch, capsys):
    """A pack of one ``count`` of an ophyd v1 Pilatus whose AD_HDF5 file holds simulated
    CeO2 frames, ingested with its frames left in place, then ``xrd-bluesky replay UID
    --purpose measurement --poni TRUE.poni`` on the catalog: one integration run, a
    pattern per frame, whose CeO2 rings fit within 0.005 deg of the true geometry's
    (the simulator renders rings at the truth; 0.005 deg is about a tenth of a pixel at
    300 mm); the raw run is left as ingested."""
    area = beamline_data / f"ingest-replay-{uuid.uuid4().hex[:8]}"
    config = BeamlineConfig(detector=DETECTOR)
    frames = CeO2Frames(config)
    (area / "data").mkdir(parents=True)
    det = make_fake_pilatus("pil", frames, area / "data", shape=frames.photons.shape)
    docs = image_run(RE, det, FRAMES, sample={"name": "CeO2"}, operator="elsewhere")
    uid = docs[0][1]["uid"]
    report = ingest(catalog, open_pack(write_pack(area / "pack", [docs])))
    assert report.ok and [r.uid for r in report.ingested] == [uid] and report.ingested[0].frames == FRAMES
    raw_before = dict(catalog.raw[uid].start), dict(catalog.raw[uid].stop)
    assert "purpose" not in raw_before[0]
    poni = frames.poni.write(area / "true.poni")

    monkeypatch.setenv("TILED_API_KEY", catalog.uri.split("api_key=")[1])
    status = main(["replay", uid, "--purpose", "measurement", "--poni", str(poni),
                   "--catalog", catalog.uri.split("?")[0], "--directory", str(catalog.frames_dir.parent)])
    out = capsys.readouterr()
    assert status == 0, out
    derived = list(catalog.processed.search(Contains("parent_uids", uid)).values())
    assert [r.start["analysis"] for r in derived] == ["integration"], out
    run = derived[0]
    assert run.stop["exit_status"] == "success" and run.start["replay"] is True
    assert run.start["geometry"]["source"] == "poni_file"
    primary = run["primary"].read()
    assert len(primary["two_theta"]) == FRAMES
    for i in range(FRAMES):
        x, y, sigma = (np.asarray(primary[key][i], dtype=float)
                       for key in ("two_theta", "intensity_2theta", "sigma_2theta"))
        seen = x[np.isfinite(y)]
        visible = [t for t in ceo2_rings(frames.poni.wavelength) if seen.min() + 0.2 < t < seen.max() - 0.2]
        assert len(visible) >= 3, visible
        for ring in visible:
            fit = fit_peak(x, y, (ring - 0.15, ring + 0.15), sigma=sigma)
            assert fit.success and abs(fit.centre - ring) < 0.005, (i, ring, fit)
    assert (dict(catalog.raw[uid].start), dict(catalog.raw[uid].stop)) == raw_before
