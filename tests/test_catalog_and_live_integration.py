"""A scan through the RunEngine into the embedded Tiled catalog, with live integration."""

from dataclasses import replace

import h5py
import numpy as np
import pytest
from tiled.queries import Contains, Key

from xrd_bluesky.frames.hdf5 import path_from_uri
from xrd_bluesky.plans import multi_position_count
from xrd_bluesky.science.detector_pixels import pixel_geometry
from xrd_bluesky.science.geometry import DetectorPositionModel, StagePosition
from xrd_bluesky.science.reduction.integration import invalid_pixels
from xrd_bluesky.science.units import two_theta_rad, wavelength_m
from xrd_bluesky.store.gain_maps import gain_map_from_run

POSITIONS = [(0.0, 0.0, 300.0), (12.0, -8.0, 260.0)]


@pytest.fixture
def ceo2_run(live, catalog, beamline):
    bl = beamline
    bl.sample_changer.slot.put("CeO2")
    uid = live(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, POSITIONS, num=1,
                                    shutter=bl.source.shutter, energy=bl.source.energy,
                                    sample=bl.sample_changer.sample().metadata()))[0]
    derived = catalog.processed.search(Contains("parent_uids", uid)).values().last()
    return uid, derived


def test_raw_frames_read_back_equal_to_the_detector_file(ceo2_run, catalog):
    uid, _ = ceo2_run
    run = catalog.raw[uid]
    assert run.start["purpose"] == "measurement"
    assert run.start["energy_keV"] == 17.0
    stored = run["primary"]["det_image"].read()
    files = [path_from_uri(d["uri"]) for n, d in run.documents() if n == "stream_resource"]
    assert len(files) == 2  # one file per stream: dark, primary
    written = {}
    for path in files:
        with h5py.File(path) as f:
            written[f["/entry/data/data"].shape[0]] = f["/entry/data/data"][:]
    assert stored.shape == (len(POSITIONS), 1, *written[len(POSITIONS)].shape[1:])
    np.testing.assert_array_equal(stored[:, 0], written[len(POSITIONS)])
    assert run["dark"]["det_image"].read().shape[0] == 1
    assert catalog.raw.search(Key("purpose") == "measurement")[uid].start["uid"] == uid
    assert catalog.raw[run.start["scan_id"]].start["uid"] == uid


def test_derived_run_equals_plain_pyfai(ceo2_run, catalog, beamline):
    """The live integration equals pyFAI's integrate1d on the same frame, dark and mask."""
    uid, derived = ceo2_run
    assert derived.start["parent_uids"] == [uid]
    assert derived.stop["exit_status"] == "success"
    # the geometry the derived run says it used (simulator truth, or a calibration
    # made by an earlier test in this session's catalog)
    recorded = derived.start["geometry"]
    model = DetectorPositionModel.from_dict(recorded["model"])
    flat, bad = None, False
    if derived.start["gain_map_uid"]:  # a gain map made by an earlier test is current
        source = gain_map_from_run(catalog.processed[derived.start["gain_map_uid"]])
        flat, bad = source.gain, source.bad
    raw = catalog.raw[uid]
    frames = raw["primary"]["det_image"].read()
    dark = raw["dark"]["det_image"].read()[0, 0].astype(float)
    data = derived["primary"].read()
    for i, pos in enumerate(POSITIONS):
        poni = replace(model.poni_at(StagePosition(*pos)), wavelength=wavelength_m(17.0))
        frame = frames[i, 0]
        shadow = beamline.config.beamstop.shadow(pixel_geometry(poni, 0.99), margin_mm=0.5)
        mask = invalid_pixels(frame, poni, static_mask=shadow) | (frame >= 2**20 - 1) | bad
        ai = poni.integrator()
        # counts/sr: pyFAI's relative solid angle times the PONI pixel's absolute one
        ref = ai.integrate1d(frame.astype(np.float32), 2000, unit="2th_deg", method=("bbox", "csr", "cython"),
                             dark=dark, flat=flat, mask=mask, polarization_factor=0.99, error_model="poisson",
                             radial_range=derived.start["parameters"]["radial_ranges"]["2th_deg"],
                             normalization_factor=ai.pixel1 * ai.pixel2 / ai.dist**2)
        got, sigma = np.asarray(data["intensity_2theta"][i]), np.asarray(data["sigma_2theta"][i])
        valid = np.asarray(ref.count) > 0
        np.testing.assert_allclose(np.asarray(data["two_theta"][i]), ref.radial, rtol=1e-12)
        # float32 pixel-splitting weights, double sums in both: agreement to rounding
        np.testing.assert_allclose(got[valid], ref.intensity[valid], rtol=1e-6)
        np.testing.assert_allclose(sigma[valid], ref.sigma[valid], rtol=1e-6)
        assert np.isnan(got[~valid]).all()  # empty bins are NaN, never 0


def test_live_ring_positions_within_0_01_deg(ceo2_run):
    from xrd_bluesky.cli.demo import ring_checks
    from xrd_bluesky.science.sim.library import default_library

    _, derived = ceo2_run
    data = derived["primary"].read()
    sample = default_library()["CeO2"]
    for i in range(len(POSITIONS)):
        checks = ring_checks(np.asarray(data["two_theta"][i]), np.asarray(data["intensity_2theta"][i]),
                             np.asarray(data["sigma_2theta"][i]), sample, 17.0)
        assert len(checks) >= 3  # a Pilatus 1M at 300-330 mm reaches 2theta ~ 23 deg
        assert max(abs(c.error_deg) for c in checks) < 0.01
    # and those true positions are Bragg's law on pyFAI's CeO2 d-spacings
    import pyFAI.calibrant
    d = pyFAI.calibrant.get_calibrant("CeO2").dspacing[:3]
    np.testing.assert_allclose([c.true_deg for c in checks[:3]],
                               np.degrees(two_theta_rad(np.array(d), wavelength_m(17.0))), atol=1e-6)


def test_frame_without_a_usable_pixel_is_flagged_and_the_run_goes_on(live, catalog, beamline):
    """Three exposures, the second saturated in every pixel: the derived run succeeds
    with the two good frames (identical frames, identical patterns), and the bad one
    is in the ``rejected`` stream with a reason naming it and why."""
    from xrd_bluesky.science.sim.image_formation import detect, expected_photons

    bl = beamline
    det = bl.detector
    bl.sample_changer.slot.put("glass")
    photons = expected_photons(bl.sample_changer.sample(), bl.true_poni(), flux_ph_s=bl.config.flux_ph_s,
                               exposure_s=1.0, beamstop=bl.config.beamstop)
    good = detect(photons, det.response, 1.0, np.random.default_rng(3))
    det.use_prerendered(np.stack([good, np.full_like(good, det.response.max_count), good]))
    try:
        uid = live(multi_position_count([det, bl.i0, bl.it], bl.stage, POSITIONS[:1], num=3,
                                        energy=bl.source.energy, sample=bl.sample_changer.sample().metadata()))[0]
    finally:
        det.use_prerendered(None)
    assert catalog.raw[uid].stop["exit_status"] == "success"
    derived = catalog.processed.search(Contains("parent_uids", uid)).values().last()
    assert derived.stop["exit_status"] == "success", derived.stop["reason"]
    primary = derived["primary"].read()
    assert list(primary["parent_seq_num"]) == [1, 3]
    np.testing.assert_array_equal(primary["intensity_q"][0], primary["intensity_q"][1])
    assert np.isfinite(primary["intensity_q"][0]).sum() > 0.9 * primary["intensity_q"].shape[1]
    rejected = derived["rejected"].read()
    assert list(rejected["parent_seq_num"]) == [2]
    reason = str(rejected["reason"][0])
    assert f"event 2 of raw run {uid}" in reason and "saturated" in reason, reason


@pytest.mark.parametrize("md, culprit", [
    ({"integration": {"npt": "many"}}, "integration options npt='many'"),
    ({"integration": [2000]}, "'integration' is [2000]; expected a mapping"),
    ({"sample": "CeO2 in a capillary"}, "'sample' is 'CeO2 in a capillary'; expected a mapping"),
])
def test_malformed_run_metadata_fails_the_analysis_naming_it(live, catalog, beamline, md, culprit):
    """Nonsense in the start document: the scan and its raw data are complete; the
    derived run ends 'fail' with a reason naming the key and value."""
    bl = beamline
    bl.sample_changer.slot.put("glass")
    uid = live(multi_position_count([bl.detector, bl.i0], bl.stage, POSITIONS[:1], md=md))[0]
    assert catalog.raw[uid].stop["exit_status"] == "success"
    derived = catalog.processed.search(Contains("parent_uids", uid)).values().last()
    assert derived.stop["exit_status"] == "fail" and culprit in derived.stop["reason"], derived.stop["reason"]


def test_unreadable_frames_flag_their_events_and_never_stop_the_scan(live, catalog, beamline, monkeypatch):
    """Frames that vanish before the analysis reads them, from the second exposure on:
    the scan succeeds, the raw run is complete, the derived run keeps the first
    exposure and flags each later event in its ``rejected`` stream naming the file."""
    from xrd_bluesky.frames import reader as frames_module

    read = frames_module.FrameRef.read
    calls = []

    def unreadable_from_the_second(self, n):
        calls.append(self.path)
        if len(calls) >= 3:  # the dark, the first exposure, then the second fails
            raise frames_module.CorruptFrameError(f"cannot read frames from {self.path}: truncated")
        return read(self, n)

    # a fault we cannot cause otherwise mid-scan
    monkeypatch.setattr(frames_module.FrameRef, "read", unreadable_from_the_second)
    bl = beamline
    bl.sample_changer.slot.put("glass")
    uid = live(multi_position_count([bl.detector, bl.i0], bl.stage, POSITIONS, shutter=bl.source.shutter))[0]
    raw = catalog.raw[uid]
    assert raw.stop["exit_status"] == "success"
    assert raw["primary"]["det_image"].read().shape[0] == len(POSITIONS)
    derived = catalog.processed.search(Contains("parent_uids", uid)).values().last()
    assert derived.stop["exit_status"] == "success", derived.stop["reason"]
    assert len(derived["primary"].read()["two_theta"]) == 1
    rejected = derived["rejected"].read()
    assert rejected["parent_seq_num"].values.tolist() == list(range(2, len(POSITIONS) + 1))
    assert all("CorruptFrameError" in r and ".h5" in r for r in rejected["reason"].values)


def test_a_run_whose_frames_cannot_be_read_ends_fail(live, catalog, beamline, monkeypatch):
    """No frame readable at all: the derived run is not 'success' with nothing in it;
    it ends 'fail' saying that nothing was integrated and why."""
    from xrd_bluesky.frames import reader as frames_module

    def unreadable(self, n):
        raise frames_module.CorruptFrameError(f"cannot read frames from {self.path}: truncated")

    monkeypatch.setattr(frames_module.FrameRef, "read", unreadable)  # a fault we cannot cause otherwise mid-scan
    bl = beamline
    uid = live(multi_position_count([bl.detector, bl.i0], bl.stage, POSITIONS[:2]))[0]
    assert catalog.raw[uid].stop["exit_status"] == "success"
    derived = catalog.processed.search(Contains("parent_uids", uid)).values().last()
    assert derived.stop["exit_status"] == "fail"
    assert "no frame of this run was integrated (2 rejected" in derived.stop["reason"]
    assert "truncated" in derived.stop["reason"]
