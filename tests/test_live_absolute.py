"""Live absolute scale through the RunEngine and the catalog: a water standard, a buffer
background and a sample in buffer at two detector positions, stitched and subtracted."""

import time

import numpy as np
from tiled.queries import Contains

from xrd_bluesky.plans.counting import multi_position_count
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.sim.samples import solute_cross_section

POSITIONS = [(0.0, 0.0, 300.0), (40.0, -30.0, 280.0)]


def derived_of(catalog, uid):
    return catalog.processed.search(Contains("parent_uids", uid)).values().last()


def finished_derived_of(catalog, uid):
    """The derived run of ``uid`` once its stop is stored; None while it is not."""
    found = catalog.processed.search(Contains("parent_uids", uid)).values().tail(1)
    return found[0] if found and "stop" in found[0].metadata else None


def measure(live, beamline, slot, md=None, sample_md=None, detectors=None):
    bl = beamline
    bl.sample_changer.slot.put(slot)
    sample = bl.sample_changer.sample().metadata() if sample_md is None else sample_md
    plan = multi_position_count(detectors or [bl.detector, bl.i0, bl.it], bl.stage, POSITIONS,
                                shutter=bl.source.shutter, energy=bl.source.energy, sample=sample, md=md)
    return live(plan)[0]


def last(stream, key):
    return np.asarray(stream.read()[key])[-1]


def test_water_standard_buffer_subtraction_live(with_gain_map, beamline, catalog):
    """Water as standard (factor 1 within 2 %), the sample in buffer stitched on the
    absolute scale within 2 % of its true cross-section (where its own statistical
    error is below 0.5 %), and sample minus buffer equal to the solute's excess
    scattering within noise; the derived run names every input."""
    live = with_gain_map
    water = measure(live, beamline, "water", md={"standard": "water"})
    buffer = measure(live, beamline, "buffer")
    sample = measure(live, beamline, "sample_in_buffer", md={"background_uid": buffer, "standard_uid": water})

    standard = derived_of(catalog, water)
    factor = float(last(standard["standard"], "standard_factor"))
    assert abs(factor - 1) < 0.02, factor
    assert standard["stitched_absolute"].read()["intensity"].attrs.get("units", "1/cm/sr") == "1/cm/sr"

    derived = derived_of(catalog, sample)
    assert derived.stop["exit_status"] == "success"
    start = derived.start
    assert start["parent_uids"] == [sample] and start["background_uid"] == buffer and start["standard_uid"] == water
    assert "calibration_uid" in start and "gain_map_uid" in start

    stitched = derived["stitched_absolute"]
    q, inten, sigma = (last(stitched, k) for k in ("q", "intensity", "sigma"))
    assert bool(last(stitched, "final")) and int(last(stitched, "frames")) == len(POSITIONS)
    truth = default_library()["sample_in_buffer"].cross_section_q(q)
    precise = np.isfinite(inten) & (sigma < 0.005 * inten)
    assert precise.sum() > 500
    assert np.abs(inten[precise] / truth[precise] - 1).max() < 0.02

    sub = derived["subtracted"]
    q, diff, dsig = (last(sub, k) for k in ("q", "intensity", "sigma"))
    solute = solute_cross_section(q) * factor
    strong = np.isfinite(diff) & (solute > 0.1 * 0.0163)
    assert strong.sum() >= 10
    pulls = (diff[strong] - solute[strong]) / dsig[strong]
    assert abs(pulls.mean()) < 1.0 and pulls.std() < 2.0


def test_unusable_monitors_flag_the_event(live, beamline, catalog):
    """No It chamber read, or no thickness: every frame is integrated (counts/sr), flagged
    with the reason, and no absolute pattern is emitted — never an all-zero one."""
    bl = beamline
    no_it = measure(live, beamline, "glass", detectors=[bl.detector, bl.i0])
    no_thickness = measure(live, beamline, "glass", sample_md={"name": "glass"})
    for uid, culprit in ((no_it, "It=nan"), (no_thickness, "thickness")):
        derived = derived_of(catalog, uid)
        assert catalog.raw[uid].stop["exit_status"] == "success"
        assert derived.stop["exit_status"] == "success"
        primary = derived["primary"].read()
        assert not np.asarray(primary["absolute_ok"]).any()
        assert all(culprit in r for r in np.asarray(primary["absolute_reason"]))
        assert "absolute" not in derived and "stitched_absolute" not in derived
        intensity = np.asarray(primary["intensity_q"])
        assert np.isfinite(intensity).sum() > 0 and np.nanmax(intensity) > 0


def test_dark_from_a_dark_run(live, beamline, catalog):
    """A measurement without its own shutter-closed frames uses the dark run it names:
    the derived run records it, and the pattern equals pyFAI's on the frame minus that
    dark; a dark run of another exposure is refused with both exposures named."""
    from dataclasses import replace

    from xrd_bluesky.plans import dark_run
    from xrd_bluesky.science.detector_pixels import pixel_geometry
    from xrd_bluesky.science.geometry import DetectorPositionModel, StagePosition
    from xrd_bluesky.science.units import wavelength_m

    bl = beamline
    bl.detector.acquire_time.put(2.0)
    dark = live(dark_run([bl.detector], bl.source.shutter, num=3))[0]
    bl.sample_changer.slot.put("glass")
    uid = live(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, POSITIONS[:1], energy=bl.source.energy,
                                    sample=bl.sample_changer.sample().metadata(), md={"dark_uid": dark}))[0]
    derived = derived_of(catalog, uid)
    assert derived.stop["exit_status"] == "success" and derived.start["dark_uid"] == dark
    dark_frames = np.asarray(catalog.raw[dark]["primary"]["det_image"].read(), float)
    mean_dark = dark_frames.reshape(-1, *bl.detector.response.shape).mean(axis=0)
    frame = np.asarray(catalog.raw[uid]["primary"]["det_image"].read())[0, 0]
    model = DetectorPositionModel.from_dict(derived.start["geometry"]["model"])
    poni = replace(model.poni_at(StagePosition(*POSITIONS[0])), wavelength=wavelength_m(17.0))
    ai = poni.integrator()
    mask = ai.detector.mask.astype(bool) | bl.config.beamstop.shadow(pixel_geometry(poni), margin_mm=0.5) | (frame < 0)
    if derived.start["gain_map_uid"]:
        from xrd_bluesky.store.gain_maps import gain_map_from_run
        source = gain_map_from_run(catalog.processed[derived.start["gain_map_uid"]])
        flat, mask = source.gain, mask | source.bad
    else:
        flat = None
    ref = ai.integrate1d(frame.astype(np.float32), 2000, unit="q_nm^-1", method=("bbox", "csr", "cython"),
                         dark=mean_dark, flat=flat, mask=mask, polarization_factor=0.99, error_model="poisson",
                         radial_range=derived.start["parameters"]["radial_ranges"]["q_nm^-1"],
                         normalization_factor=ai.pixel1 * ai.pixel2 / ai.dist**2)
    got = np.asarray(derived["primary"].read()["intensity_q"])[0]
    valid = ref.count > 0
    np.testing.assert_allclose(got[valid], ref.intensity[valid], rtol=1e-6)

    bl.detector.acquire_time.put(1.0)
    other = live(multi_position_count([bl.detector], bl.stage, POSITIONS[:1], md={"dark_uid": dark}))[0]
    failed = derived_of(catalog, other)
    assert (failed.stop["exit_status"] == "fail" and "2.0 s" in failed.stop["reason"]
            and "1.0 s" in failed.stop["reason"])


def test_a_background_measured_just_before_is_used_while_it_uploads(live_uploading_after_stop, beamline, catalog):
    """A buffer measured just before the sample is its background even when the buffer's
    derived run is still uploading as the sample's run starts: the lookup waits for the
    session's uploads, it does not miss the run (nor read it half-written)."""
    live = live_uploading_after_stop
    buffer = measure(live, beamline, "buffer")
    sample = measure(live, beamline, "sample_in_buffer", md={"background_uid": buffer})
    deadline = time.monotonic() + 120  # a hang guard: the sample's own derived run is uploading too
    while (derived := finished_derived_of(catalog, sample)) is None:
        assert time.monotonic() < deadline, "the sample's derived run did not reach the catalog"
        time.sleep(0.2)
    assert derived.stop["exit_status"] == "success", derived.stop
    assert derived.start["background_uid"] == buffer
    sub = derived["subtracted"]
    assert np.isfinite(last(sub, "intensity")).sum() > 500
