"""A detector on a 2theta arm, live: the beamline description's arm, the simulated arm,
calibration scans calibrated live into one arm model, counts at dozens of arm angles
stitched live, and replay of both."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine

from xrd_bluesky.beamline import LiveInputs, analysis_router
from xrd_bluesky.beamline.description import load_beamline
from xrd_bluesky.errors import BeamlineDescriptionError, MissingMetadataError
from xrd_bluesky.frames import (
    arm_position,
    detector_position,
    planned_positions,
)
from xrd_bluesky.plans import calibration_scan, multi_position_count
from xrd_bluesky.science.calibration.position_models import (
    ArmModel,
    ArmPosition,
)
from xrd_bluesky.science.geometry import two_theta_difference_deg
from xrd_bluesky.science.units import two_theta_rad, wavelength_m
from xrd_bluesky.sim_devices import arm_config, make_beamline
from xrd_bluesky.sim_devices.beamline import SIMULATED_ARM_DESCRIPTION, nominal_geometry
from xrd_bluesky.store.calibrations import geometry_from_calibration, latest_calibration
from xrd_bluesky.store.replay import replay
from xrd_bluesky.store.writer import catalog_writers

#: Arm angles (deg) of the calibration scan: rings of LaB6 at 17 keV fall on the
#: 300K-W's 33 mm height at most of them, not at all of them (those are skipped).
CALIBRATION_ANGLES = (8.0, 11.0, 14.0, 17.0, 20.0, 23.0, 26.0, 29.0, 32.0)
#: Arm angles of the stitched count: more than the integration keeps integrators for.
COUNT_ANGLES = tuple(np.round(np.linspace(9.0, 31.0, 8), 3))


def test_arm_description(tmp_path):
    description = load_beamline(SIMULATED_ARM_DESCRIPTION)
    detector = description.detector()
    model = detector.nominal_model()
    assert isinstance(model, ArmModel) and model.plane == "vertical" and model.scale == 1.0
    assert description.run_metadata()["arm_motors"] == {"angle": "det_arm_angle"}
    assert any("2theta arm in the vertical plane" in line for line in description.summary())
    # the shipped nominal geometry is what the simulator's BeamlineConfig says the staff believe
    nominal = nominal_geometry(arm_config().true_geometry())
    assert detector.nominal.dist == pytest.approx(nominal.reference.dist, rel=1e-12)
    assert detector.nominal.poni1 == pytest.approx(nominal.reference.poni1, rel=1e-12)
    assert detector.nominal.poni2 == pytest.approx(nominal.reference.poni2, rel=1e-12)
    text = SIMULATED_ARM_DESCRIPTION.read_text()
    carrying = tmp_path / "carrying.toml"
    carrying.write_text(text.replace('angle = "det_arm_angle"', 'angle = "det_arm_angle"\ntranslation = "det_z"'))
    described = load_beamline(carrying)
    assert described.detector().nominal_model().carries_translation
    assert described.run_metadata()["arm_motors"] == {"angle": "det_arm_angle", "translation": "det_z"}
    for bad, message in (('plane = "vertical"', 'plane = "diagonal"'), ("scale = 1.0", "scale = 0.1")):
        path = tmp_path / "bad.toml"
        path.write_text(text.replace(bad, message))
        with pytest.raises(BeamlineDescriptionError, match=message.split(" = ")[0]):
            load_beamline(path)


def test_positions_from_documents():
    start = {"arm_motors": {"angle": "tth"}, "arm_positions": [[5.0], [6.5]]}
    assert planned_positions(start) == [ArmPosition(5.0), ArmPosition(6.5)]
    assert detector_position({"uid": "e", "data": {"tth": 12.5}}, start) == ArmPosition(12.5)
    carrying = {"arm_motors": {"angle": "tth", "translation": "dz"}, "arm_positions": [[5.0, 10.0]]}
    assert planned_positions(carrying) == [ArmPosition(5.0, 10.0)]
    assert detector_position({"uid": "e", "data": {"tth": 1.0, "dz": 2.5}}, carrying) == ArmPosition(1.0, 2.5)
    with pytest.raises(MissingMetadataError, match=r"arm motor reading 'tth' \(angle\) missing"):
        arm_position({"uid": "e", "data": {}}, start["arm_motors"])
    with pytest.raises(MissingMetadataError, match="both stage_motors"):
        detector_position({"uid": "e", "data": {}}, {**start, "stage_motors": {"x": "a", "y": "b", "distance": "c"}})


@pytest.fixture
def arm_session(catalog):
    """A RunEngine with the raw writer and the analysis router of the simulated arm's
    description: no geometry but the nominal one (what the staff believe) until a
    calibration of this detector exists."""
    beamline = make_beamline(arm_config(seed=3), data_dir=catalog.frames_dir)
    RE = RunEngine({}, call_returns_result=False)
    raw, processed = catalog_writers(catalog)
    RE.subscribe(raw)
    inputs = LiveInputs(catalog, lambda: None)
    RE.subscribe(analysis_router(inputs, beamline.description, processed, export_dir=catalog.frames_dir.parent))
    yield RE, beamline
    raw.close()
    processed.close()


def _derived(catalog, uid):
    from tiled.queries import Contains

    return catalog.processed.search(Contains("parent_uids", uid)).values().last()


def test_arm_calibrated_and_stitched_live(arm_session, catalog, tmp_path):
    RE, bl = arm_session
    bl.sample_changer.slot.put("LaB6")
    (uid,) = RE(calibration_scan(bl.detector, bl.arm, "LaB6", [(a,) for a in CALIBRATION_ANGLES],
                                 shutter=bl.source.shutter, energy=bl.source.energy))
    derived = _derived(catalog, uid)
    assert derived.stop["exit_status"] == "success", derived.stop.get("reason")
    name = bl.description.detector().name
    geometry = latest_calibration(catalog.processed, name)
    assert geometry.calibration_uid == derived.start["uid"]
    # the stage detector of the other tests does not take the arm's calibration
    assert latest_calibration(catalog.processed, "det") is None or \
        latest_calibration(catalog.processed, "det").calibration_uid != derived.start["uid"]
    model, truth = geometry.model, bl.true_geometry()
    # the bounds at every calibration angle and at angles never measured. The PONI
    # along the arm's motion trades against the arm's zero and the sideways tilt against
    # the PONI across (see test_arm_calibration): what is determined, and what integration
    # uses, is every pixel's 2theta: within 0.2 px of PONI error, 0.2 x 172 um / 0.9 m;
    # the distance within 0.05 %; the arm's rotation over the scan within 0.02 deg
    bound_deg = np.degrees(0.2 * 172e-6 / truth.reference.dist)
    for angle in (*CALIBRATION_ANGLES, 12.5, 27.5):
        found, true = model.poni_at(ArmPosition(angle)), truth.poni_at(ArmPosition(angle))
        assert two_theta_difference_deg(found, true) < bound_deg, angle
        assert abs(found.dist / true.dist - 1) < 5e-4
    assert abs(model.scale - truth.scale) * (CALIBRATION_ANGLES[-1] - CALIBRATION_ANGLES[0]) < 0.02
    assert model.calibrated_range_deg[0] >= CALIBRATION_ANGLES[0]
    positions = derived["positions"].read()
    assert list(np.asarray(positions["arm_angle"])) == list(CALIBRATION_ANGLES)
    assert derived["positions"].metadata["data_keys"]["arm_angle"]["units"] == "deg"

    # a count at more angles than the integration keeps integrators for, stitched live
    bl.sample_changer.slot.put("CeO2")
    sample = bl.sample_changer.sample()
    energy = float(bl.source.energy.get())
    angles = (*COUNT_ANGLES, model.calibrated_range_deg[1] + 2.0)  # the last one beyond the calibrated range
    (count,) = RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.arm, [(a,) for a in angles],
                                       energy=bl.source.energy, sample=sample.metadata()))
    integration = _derived(catalog, count)
    assert integration.stop["exit_status"] == "success", integration.stop.get("reason")
    assert integration.start["geometry"]["calibration_uid"] == derived.start["uid"]
    stitched = integration["stitched"].read()
    assert bool(stitched["final"][-1]) and int(stitched["positions"][-1]) == len(angles)
    notes = list(np.asarray(integration["primary"].read()["geometry_note"]))
    assert all(note == "" for note in notes[:-1]) and f"{angles[-1]:g}" in notes[-1]
    tth, intensity = np.asarray(stitched["two_theta"][-1]), np.asarray(stitched["intensity_2theta"][-1])
    # every CeO2 ring inside the stitched range, by a centroid over +-0.1 deg: within
    # 0.02 deg of its true 2theta (the demo's bar; pixels of 172 um at 0.9 m span 0.011 deg)
    rings = [np.degrees(two_theta_rad(r.d_A, wavelength_m(energy))) for r, _ in sample.ring_table(wavelength_m(energy))]
    inside = [t for t in rings if np.nanmin(tth) + 0.5 < t < np.nanmax(tth) - 0.5]
    assert len(inside) >= 5
    for true in inside:
        window = (tth > true - 0.1) & (tth < true + 0.1) & np.isfinite(intensity)
        weights = intensity[window] - np.nanmin(intensity[window])
        assert np.sum(weights * tth[window]) / np.sum(weights) == pytest.approx(true, abs=0.02)

    # replay reproduces the live calibration and integration
    (replayed,) = replay(catalog, uid, export_dir=tmp_path)
    assert replayed.exit_status == "success"
    assert geometry_from_calibration(catalog.processed[replayed.uid]).model == model
    made = {run.analysis: run for run in replay(catalog, count, export_dir=tmp_path)}
    final = catalog.processed[made["integration"].uid]["stitched"].read()
    np.testing.assert_allclose(np.asarray(final["intensity_2theta"][-1]), intensity, rtol=1e-6, equal_nan=True)

