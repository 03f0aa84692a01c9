"""The file source: image files with their PONIs become runs in memory that go through
the live router, so that files and live data share one integrated pattern."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
from fabio.tifimage import TifImage
from pyFAI.multi_geometry import MultiGeometry
from tiled.queries import Contains

from xrd_bluesky.cli.integrate import FLUX, add_parser
from xrd_bluesky.errors import CorruptFrameError, MonitorError, ShapeMismatchError
from xrd_bluesky.frames import detector_config
from xrd_bluesky.plans.counting import multi_position_count
from xrd_bluesky.schema import InstrumentSettings
from xrd_bluesky.science.geometry import DetectorPositionModel, Poni, StagePosition
from xrd_bluesky.science.reduction.monitors import AIR_TRANSMISSION
from xrd_bluesky.science.reduction.multi_geometry import covered_radial_range
from xrd_bluesky.science.sim.image_formation import expected_photons
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.sim.samples import solute_cross_section
from xrd_bluesky.science.units import wavelength_m
from xrd_bluesky.sources.file_runs import FileFrame, FileRun, analyse
from xrd_bluesky_bench.stitch import reference_integrators

DET = "Pilatus300k"  # 619 x 487 pixels of 172 um: quick
ENERGY_KEV = 17.0
POSITION = (0.0, 0.0, 300.0)


def integrate(*argv) -> int:
    """Run ``xrd-bluesky integrate ARGV`` through a parser built by :func:`add_parser`."""
    parser = argparse.ArgumentParser(prog="xrd-bluesky")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["integrate", *map(str, argv)])
    return args.func(args)


def centred_poni(dist: float = 0.2, shift_mm: tuple[float, float] = (0.0, 0.0)) -> Poni:
    """A geometry of the test detector, the beam near its centre shifted by ``shift_mm``."""
    return Poni(dist, 619 * 172e-6 / 2 + shift_mm[0] * 1e-3, 487 * 172e-6 / 2 + shift_mm[1] * 1e-3,
                wavelength=wavelength_m(ENERGY_KEV), detector=DET)


def rendered(sample: str, poni: Poni, rng, *, flux: float = 2e12, exposure_s: float = 10.0) -> np.ndarray:
    """Poisson counts of ``sample`` (no beamstop, ideal detector) as int32."""
    photons = expected_photons(default_library()[sample], poni, flux_ph_s=flux, exposure_s=exposure_s, beamstop=None)
    return rng.poisson(photons).astype(np.int32)


def monitors(sample: str, flux: float = 2e12, exposure_s: float = 10.0) -> tuple[float, float]:
    """The I0 and It counts of an exposure of ``sample`` (the monitors' calibration, the
    sample's transmission and the air's)."""
    i0 = FLUX.rate(flux) * exposure_s
    return i0, i0 * default_library()[sample].transmission(ENERGY_KEV) * AIR_TRANSMISSION


def pattern(path):
    return np.loadtxt(path, comments="#", ndmin=2).T


# --------------------------------------------------------------------------- file run == live run

def test_file_run_gives_the_live_pattern(live, beamline, catalog):
    """A frame measured live, put into a file run with the geometry, instrument settings,
    monitors and exposure the live analysis recorded, gives its q pattern (counts/sr)
    and its absolute pattern (1/cm/sr) within 1e-6."""
    bl = beamline
    bl.sample_changer.slot.put("glass")
    sample = bl.sample_changer.sample().metadata()
    uid = live(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, [POSITION], energy=bl.source.energy,
                                    sample=sample))[0]
    derived = catalog.processed.search(Contains("parent_uids", uid)).values().last()
    assert derived.stop["exit_status"] == "success"
    start = derived.start
    raw = catalog.raw[uid]["primary"]
    data = raw.read()
    frame = np.asarray(raw["det_image"].read())[0, 0]
    config = detector_config(raw.metadata, "det_image")
    model = DetectorPositionModel.from_dict(start["geometry"]["model"])
    poni = replace(model.poni_at(StagePosition(*POSITION)), wavelength=wavelength_m(start["energy_keV"]))
    gain_map = None
    if start["gain_map_uid"]:
        from xrd_bluesky.store.gain_maps import gain_map_from_run
        gain_map = gain_map_from_run(catalog.processed[start["gain_map_uid"]])
    instrument = replace(InstrumentSettings.from_dict(start["parameters"]["instrument"]),
                         beamstop=bl.config.beamstop)
    keys = start["parameters"]["monitors"]
    run = FileRun((FileFrame("glass", "glass.tif", frame, poni, float(np.asarray(data[keys["i0"]])[0]),
                             float(np.asarray(data[keys["it"]])[0]), config["acquire_time"],
                             instrument.max_count(config["max_count"])),), "glass", sample["thickness_mm"])
    ours = analyse(run, npt=start["parameters"]["npt"], instrument=instrument, gain_map=gain_map)
    for stream, key in (("primary", "intensity_q"), ("absolute", "intensity")):
        live_data = derived[stream].read()
        expected = np.asarray(live_data[key])[0]
        got = np.asarray(ours.streams[stream][0][key])
        np.testing.assert_array_equal(np.asarray(ours.streams[stream][0]["q"]), np.asarray(live_data["q"])[0])
        assert np.isfinite(expected).sum() > 1000
        np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)


# --------------------------------------------------------------------------- absolute scale

@pytest.fixture(scope="module")
def solution(tmp_path_factory):
    """TIFFs of water, buffer and sample in buffer on one PONI, their monitors CSV."""
    d = tmp_path_factory.mktemp("solution")
    poni = centred_poni()
    poni.write(d / "det.poni")
    rng = np.random.default_rng(3)
    lines = ["file,i0,it,exposure_s,thickness_mm"]
    for name in ("water", "buffer", "sample_in_buffer"):
        TifImage(data=rendered(name, poni, rng)).write(str(d / f"{name}.tif"))
        i0, it = monitors(name)
        lines.append(f"{name}.tif,{i0!r},{it!r},10.0,{default_library()[name].thickness_mm!r}")
    (d / "monitors.csv").write_text("\n".join(lines) + "\n")
    code = integrate(d / "sample_in_buffer.tif", "--poni", d / "det.poni", "--monitors", d / "monitors.csv",
                     "--background", d / "buffer.tif", "--standard", d / "water.tif", "--npt", 500,
                     "-o", d / "out")
    assert code == 0
    return d


def header(path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))


def test_absolute_scale_from_files_is_the_true_cross_section(solution):
    """The sample's absolute pattern (1/cm/sr) from files and monitors is its true
    cross-section within 2 % wherever its statistical error is below 0.5 %, the water
    standard's factor is 1 within 2 %, and sample minus buffer is the solute's excess
    scattering within noise; the headers name the inputs, monitors, units and version."""
    out = solution / "out"
    q, intensity, sigma = pattern(out / "sample_in_buffer_absolute.xye")
    truth = default_library()["sample_in_buffer"].cross_section_q(q)
    precise = sigma < 0.005 * intensity
    assert precise.sum() > 200
    assert np.abs(intensity[precise] / truth[precise] - 1).max() < 0.02
    text = header(out / "sample_in_buffer_absolute.xye")
    factor = float(text.split("factor ")[1].split()[0])
    assert abs(factor - 1) < 0.02, factor
    for item in ("1/cm/sr", "i0: ", " counts", "exposure_s: 10 s", "thickness_mm: ", "water.tif", "buffer.tif",
                 "det.poni", "xrd_bluesky_version", "flux_calibration"):
        assert item in text, item
    q, diff, dsig = pattern(out / "subtracted.xye")
    solute = solute_cross_section(q) * factor
    strong = solute > 0.1 * 0.0163
    assert strong.sum() >= 10
    pulls = (diff[strong] - solute[strong]) / dsig[strong]
    assert abs(pulls.mean()) < 1.0 and pulls.std() < 2.0


def test_bad_monitors_are_named(solution, tmp_path):
    d = solution
    common = ["--poni", d / "det.poni", "--exposure", 10, "--thickness", 1.0, "-o", tmp_path / "out"]
    with pytest.raises(SystemExit):  # argparse: a monitor of zero
        integrate(d / "water.tif", "--i0", 0, "--it", 5, *common)
    (tmp_path / "zero.csv").write_text(f"file,i0,it\n{d / 'water.tif'},0,5\n")
    with pytest.raises(MonitorError, match=r"zero\.csv line 2 .*water\.tif.*i0 = '0' counts"):
        integrate(d / "water.tif", "--monitors", tmp_path / "zero.csv", *common)
    (tmp_path / "missing.csv").write_text("file,i0,it\nabsent.tif,5,4\n")
    with pytest.raises(CorruptFrameError, match=r"missing\.csv line 2.*not found.*absent\.tif"):
        integrate(d / "water.tif", "--monitors", tmp_path / "missing.csv", *common)
    with pytest.raises(MonitorError, match=r"water\.tif: .*transmission"):
        integrate(d / "water.tif", "--i0", 100, "--it", 1000, *common)


# --------------------------------------------------------------------------- stitching with a PONI per frame

def test_stitch_with_a_poni_per_frame_is_pyfai_multigeometry(tmp_path):
    """Three frames of glass, the detector moved between them, each with its own PONI
    (--poni per frame and a positions CSV with a poni column give the same file): the
    stitched pattern is pyFAI MultiGeometry's within 1e-4, every bin filled; a frame of
    the wrong shape is named with both shapes."""
    rng = np.random.default_rng(5)
    ponis = [centred_poni(0.25, shift) for shift in ((0.0, 0.0), (25.0, -20.0), (-30.0, 35.0))]
    frames, argv, rows = [], [], ["file,poni"]
    for i, poni in enumerate(ponis):
        frames.append(rendered("glass", poni, rng, flux=1e11, exposure_s=1.0))
        TifImage(data=frames[-1]).write(str(tmp_path / f"f{i}.tif"))
        poni.write(tmp_path / f"f{i}.poni")
        argv += ["--poni", tmp_path / f"f{i}.poni"]
        rows.append(f"f{i}.tif,f{i}.poni")
    (tmp_path / "ponis.csv").write_text("\n".join(rows) + "\n")
    files = [tmp_path / f"f{i}.tif" for i in range(3)]
    npt, unit = 600, "2th_deg"
    assert integrate(*files, *argv, "--stitch", "--unit", unit, "--npt", npt, "-o", tmp_path / "a") == 0
    assert integrate("--positions", tmp_path / "ponis.csv", "--stitch", "--unit", unit, "--npt", npt,
                     "-o", tmp_path / "b") == 0
    mine = pattern(tmp_path / "a" / "stitched.xye")
    np.testing.assert_array_equal(mine, pattern(tmp_path / "b" / "stitched.xye"))
    ponis = [Poni.read(tmp_path / f"f{i}.poni") for i in range(3)]
    radial_range = covered_radial_range(ponis, unit)
    mg = MultiGeometry(reference_integrators(ponis), unit=unit, radial_range=radial_range,
                       azimuth_range=(-180, 180), threadpoolsize=0)
    masks = [p.detector_model().mask.astype(bool) for p in ponis]
    ref = mg.integrate1d([f.astype(np.float32) for f in frames], npt, lst_mask=masks, polarization_factor=0.99,
                         lst_variance=[np.maximum(f, 1.0).astype(np.float32) for f in frames],
                         method=("bbox", "csr", "cython"))
    assert (ref.count > 0).all() and mine.shape[1] == npt
    np.testing.assert_allclose(mine[0], ref.radial, rtol=1e-6)
    np.testing.assert_allclose(mine[1], ref.intensity, rtol=1e-4)
    np.testing.assert_allclose(mine[2], ref.sigma, rtol=1e-4)
    assert "f1.poni" in header(tmp_path / "a" / "stitched.xye")

    TifImage(data=frames[0][:, :400]).write(str(tmp_path / "cut.tif"))
    with pytest.raises(ShapeMismatchError, match=r"cut\.tif has shape \(619, 400\), detector .* needs \(619, 487\)"):
        integrate(tmp_path / "cut.tif", files[1], *argv[:4], "--stitch", "-o", tmp_path / "c")
