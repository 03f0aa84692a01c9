"""At a real beamline: the ecosystem's own device classes, named unlike ours, through
``attach`` into a catalog.

Each detector flavour (ophyd-async's simulated detector with its HDF5 writer; ophyd
v1's ``AreaDetector`` with an HDF5 plugin, made with ``make_fake_device``, the test
writing the file where the IOC would; ``ophyd.sim`` images inline in events) runs a
calibration scan and a measurement at two stage positions on a RunEngine of the
test's own, with a beamline description of the test's own. The calibration must
recover the true geometry (bounds below) and the measurement put the CeO2 rings
within 0.01 deg of their true 2theta.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.run_engine import call_in_bluesky_event_loop
from devices.ophyd_async_detector import make_sim_detector
from devices.ophyd_v1_detector import make_fake_pilatus
from devices.scene import DETECTOR, ENERGY_KEV, Scene, description_toml, true_geometry
from ophyd import Signal
from ophyd.sim import DirectImage, SynAxis
from tiled.queries import Contains

from xrd_bluesky import attach
from xrd_bluesky.beamline import load_beamline
from xrd_bluesky.cli.demo import ring_checks
from xrd_bluesky.errors import MissingMetadataError
from xrd_bluesky.plans import calibration_scan, multi_position_count
from xrd_bluesky.science.geometry import StagePosition
from xrd_bluesky.science.sim.library import default_library

#: Stage positions (x, y, distance in mm) of the calibration and of the measurement.
CALIBRATION_POSITIONS = [(0.0, 0.0, 200.0), (14.0, -10.0, 215.0)]
MEASUREMENT_POSITIONS = [(6.0, 4.0, 205.0), (-8.0, 6.0, 190.0)]
#: Data keys of the test's ophyd v1 stage motors and ion chambers.
V1_MOTORS = {"x": "tbl_x", "y": "tbl_y", "distance": "tbl_z"}
MONITOR_KEYS = {"i0": "ic_up", "it": "ic_down"}
DETECTOR_SHAPE = tuple(true_geometry().reference.detector_model().shape)
#: Ring positions within this of the calibrant's true 2theta (the issue's bar; the
#: simulator's own demo holds 0.02 deg on a 2M).
RING_TOLERANCE_DEG = 0.01


@pytest.fixture
def data_root(beamline_data):
    """Where the detectors write: the beamline's data area, a storage root of the
    session's catalog."""
    return beamline_data


def monitors() -> tuple[Signal, Signal]:
    """Ion chambers named unlike the simulator's (counts)."""
    return Signal(name="ic_up", value=2.0e5), Signal(name="ic_down", value=1.6e5)


def v1_stage() -> dict:
    return {"x": SynAxis(name="tbl_x"), "y": SynAxis(name="tbl_y"), "distance": SynAxis(name="tbl_z", value=200.0)}


def v1_position(stage: dict) -> StagePosition:
    return StagePosition(*(float(stage[axis].position) for axis in ("x", "y", "distance")))


def run_flavour(RE, catalog, description, detector, stage, tmp_path, *, exposure) -> tuple:
    """Calibration scan, then measurement, through ``attach``; the two derived runs."""
    handle = attach(RE, description, catalog=catalog, directory=tmp_path)
    try:
        up, down = monitors()
        cal = RE(calibration_scan(detector, stage, "CeO2", CALIBRATION_POSITIONS, exposure=exposure,
                                  monitors=[up, down], beamline=handle.beamline))[0]
        assert catalog.raw[cal].stop["exit_status"] == "success"
        calibration = derived_of(catalog, cal)
        assert calibration.stop["exit_status"] == "success", calibration.stop["reason"]
        measured = RE(multi_position_count([detector, up, down], stage, MEASUREMENT_POSITIONS,
                                           sample={"name": "CeO2", "thickness_mm": 0.5}, beamline=handle.beamline))[0]
        integration = derived_of(catalog, measured)
        assert integration.stop["exit_status"] == "success", integration.stop["reason"]
        assert integration.start["calibration_uid"] == calibration.start["uid"]
        return calibration, integration
    finally:
        handle.close()


def derived_of(catalog, uid: str):
    return catalog.processed.search(Contains("parent_uids", uid)).values().last()


def measure_once(catalog, detector, stage, description, tmp_path, *, record_raw: bool = True):
    """One measurement at the first two positions, through ``attach`` on a fresh
    RunEngine; the derived run."""
    RE = RunEngine({}, call_returns_result=False)
    handle = attach(RE, description, catalog=catalog, directory=tmp_path, record_raw=record_raw)
    try:
        up, down = monitors()
        uid = RE(multi_position_count([detector, up, down], stage, MEASUREMENT_POSITIONS,
                                      beamline=handle.beamline))[0]
    finally:
        handle.close()
    return derived_of(catalog, uid)


def assert_physics(calibration, integration) -> None:
    """The calibration recovers the truth at every position (beam centre 0.3 px,
    distance 0.05 %, tilts 0.02 deg: issue 3's bounds, the centre relaxed from 0.2 px
    for two positions instead of five) and the integration puts every CeO2 ring
    within :data:`RING_TOLERANCE_DEG` of its true 2theta."""
    truth = true_geometry()
    table = calibration["positions"].read()
    for i in range(len(CALIBRATION_POSITIONS)):
        position = StagePosition(*(float(table[f"stage_{a}"][i]) for a in ("x", "y", "distance")))
        true = truth.poni_at(position)
        found = np.array([float(table["beam_centre_row"][i]), float(table["beam_centre_column"][i])])
        centre = np.abs(found - np.array(true.beam_centre_px()))
        distance = abs(float(table["dist"][i]) - true.dist) / true.dist
        tilts = [abs(math.degrees(float(table[rot][i]) - getattr(true, rot))) for rot in ("rot1", "rot2")]
        print(f"calibration at {position}: centre off {centre.max():.3f} px, distance {distance:.2e}, "
              f"tilts {max(tilts):.4f} deg")  # shown with pytest -s
        assert np.all(centre < 0.3) and distance < 5e-4 and max(tilts) < 0.02
    data = integration["primary"].read()
    sample = default_library()["CeO2"]
    for i in range(len(MEASUREMENT_POSITIONS)):
        checks = ring_checks(*(np.asarray(data[k][i]) for k in ("two_theta", "intensity_2theta", "sigma_2theta")),
                             sample, ENERGY_KEV)
        assert len(checks) >= 4
        worst = max(abs(c.error_deg) for c in checks)
        print(f"measurement {MEASUREMENT_POSITIONS[i]}: {len(checks)} rings, worst {worst:.4f} deg")
        assert worst < RING_TOLERANCE_DEG, [(c.hkl, c.error_deg) for c in checks]


def write_description(tmp_path, **keys) -> str:
    """A description of the test beamline in ``tmp_path`` (ophyd v1 motor and ion
    chamber keys unless given)."""
    path = tmp_path / "beamline.toml"
    path.write_text(description_toml(**{"motors": V1_MOTORS, "monitors": MONITOR_KEYS, **keys}))
    return str(path)


def test_ophyd_v1_area_detector(catalog, data_root, tmp_path):
    """ophyd v1 AreaDetector (ADPilatus cam, HDF5 plugin with FileStoreHDF5IterativeWrite):
    resource (AD_HDF5) and datum documents, read through area-detector-handlers; the
    driver says 'Pilatus', which the description maps to pyFAI's Pilatus1M."""
    RE = RunEngine({}, call_returns_result=False)
    stage = v1_stage()
    scene = Scene(lambda: v1_position(stage))
    det = make_fake_pilatus("pil", scene.frame, data_root, model="Pilatus", shape=DETECTOR_SHAPE)
    description = write_description(tmp_path, image_key="pil_image", storage_root=str(data_root))
    calibration, integration = run_flavour(RE, catalog, description, det, stage, tmp_path, exposure=1.0)
    assert_physics(calibration, integration)
    assert integration.start["parameters"]["image_key"] == "pil_image"
    assert integration["primary"].read()["absolute_ok"].values.all()  # monitors found by the description's keys


def test_ophyd_async_simulated_detector(catalog, data_root, tmp_path):
    """ophyd-async's SimBlobDetector with its own HDF5 writer (SWMR, a '-sum' dataset
    beside the frames, keys named with '-'), ophyd-async motors."""
    from ophyd_async.core import soft_signal_rw
    from ophyd_async.sim import SimMotor

    RE = RunEngine({}, call_returns_result=False)
    motors = {"x": SimMotor(name="arm_x"), "y": SimMotor(name="arm_y"), "distance": SimMotor(name="arm_z")}
    positions = {"x": 0.0, "y": 0.0, "distance": 0.0}

    async def connect():
        for axis, motor in motors.items():
            await motor.connect()
            await motor.velocity.set(0.0)  # moves instantly
            motor.user_readback.subscribe_reading(
                lambda reading, axis=axis: positions.__setitem__(axis, next(iter(reading.values()))["value"]))
        await motors["distance"].set(200.0)

    call_in_bluesky_event_loop(connect())
    scene = Scene(lambda: StagePosition(positions["x"], positions["y"], positions["distance"]))
    model = soft_signal_rw(str, initial_value="Pilatus", name="pil-model")
    det = make_sim_detector("pil", scene.frame, DETECTOR_SHAPE, data_root, config_sigs=[model])
    description = write_description(tmp_path, image_key="pil", storage_root=str(data_root),
                                    motors={"x": "arm_x", "y": "arm_y", "distance": "arm_z"})
    calibration, integration = run_flavour(RE, catalog, description, det, motors, tmp_path, exposure=None)
    assert_physics(calibration, integration)


def test_inline_images(catalog, data_root, tmp_path):
    """Images inline in events (ophyd.sim DirectImage)."""
    RE = RunEngine({}, call_returns_result=False)
    stage = v1_stage()
    scene = Scene(lambda: v1_position(stage))
    det = DirectImage(name="cam", func=scene.frame)
    description = write_description(tmp_path, image_key="cam_img", storage_root=str(data_root), models=())
    calibration, integration = run_flavour(RE, catalog, description, det, stage, tmp_path, exposure=None)
    assert_physics(calibration, integration)


def test_without_calibration_or_nominal_geometry_a_run_fails_saying_why(catalog, data_root, tmp_path):
    """A detector with no calibration in the catalog (the catalog's calibrations are
    another detector's) and no nominal geometry in the description: not integrated,
    and the derived run says why (no simulator values, no other detector's geometry)."""
    stage = v1_stage()
    det = DirectImage(name="cam", func=Scene(lambda: v1_position(stage)).frame)
    description = load_beamline(write_description(tmp_path, image_key="cam_img", storage_root=str(data_root),
                                                  models=(), nominal=False, name="spare"))
    assert attach(RunEngine({}), description, catalog=catalog, analyse=False, record_raw=False,
                  directory=tmp_path).current_geometry() is None
    derived = measure_once(catalog, det, stage, description, tmp_path)
    assert derived.stop["exit_status"] == "fail"
    assert "no geometry: no calibration in the catalog and no nominal geometry" in derived.stop["reason"]


def test_a_driver_model_the_description_does_not_list_is_refused(catalog, data_root, tmp_path):
    """An ADEiger driver's frames, where the description says Pilatus: named, not integrated."""
    stage = v1_stage()
    det = make_fake_pilatus("eig", Scene(lambda: v1_position(stage)).frame, data_root, model="Eiger2 1M",
                            shape=DETECTOR_SHAPE)
    description = write_description(tmp_path, image_key="eig_image", storage_root=str(data_root))
    derived = measure_once(catalog, det, stage, description, tmp_path)
    assert derived.stop["exit_status"] == "fail"
    assert "model 'Eiger2 1M'" in derived.stop["reason"] and "['Pilatus']" in derived.stop["reason"]


def test_frames_outside_every_storage_root_are_named(catalog, data_root, tmp_path_factory, tmp_path):
    """A detector writing outside the description's storage roots: each event is
    flagged naming the file and the roots; the run ends 'fail' (nothing integrated)."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    stage = v1_stage()
    det = make_fake_pilatus("pil2", Scene(lambda: v1_position(stage)).frame, elsewhere, shape=DETECTOR_SHAPE)
    description = write_description(tmp_path, image_key="pil2_image", storage_root=str(data_root))
    derived = measure_once(catalog, det, stage, description, tmp_path, record_raw=False)
    assert derived.stop["exit_status"] == "fail"
    assert "outside every frame storage root" in derived.stop["reason"] and str(elsewhere) in derived.stop["reason"]
    reasons = derived["rejected"].read()["reason"].values
    assert len(reasons) == len(MEASUREMENT_POSITIONS) and all("storage root" in r for r in reasons)


def test_frames_of_another_shape_than_the_described_detector_are_refused(catalog, data_root, tmp_path):
    """The description says Pilatus 300k, the frames are a 1M's: named, not integrated."""
    stage = v1_stage()
    det = DirectImage(name="cam", func=Scene(lambda: v1_position(stage)).frame)
    text = description_toml(image_key="cam_img", motors=V1_MOTORS, monitors=MONITOR_KEYS, storage_root=str(data_root),
                            models=(), name="small").replace(f'pyfai = "{DETECTOR}"', 'pyfai = "Pilatus300k"')
    (tmp_path / "beamline.toml").write_text(text)
    derived = measure_once(catalog, det, stage, tmp_path / "beamline.toml", tmp_path)
    assert derived.stop["exit_status"] == "fail"
    assert "frames have shape (1043, 981), the geometry's detector 'Pilatus300k' has (619, 487)" \
        in derived.stop["reason"]


def test_a_monitor_the_devices_do_not_read_is_refused_before_anything_moves(tmp_path, data_root):
    """The description names an ion chamber the plan's devices do not read: the plan
    stops before the first move, naming the key."""
    RE = RunEngine({}, call_returns_result=False)
    stage = v1_stage()
    det = DirectImage(name="cam", func=Scene(lambda: v1_position(stage)).frame)
    description = load_beamline(write_description(tmp_path, image_key="cam_img", storage_root=str(data_root),
                                                  monitors={"i0": "I0_missing", "it": "ic_down"}, models=()))
    up, down = monitors()
    with pytest.raises(MissingMetadataError, match="I0_missing"):
        RE(multi_position_count([det, up, down], stage, MEASUREMENT_POSITIONS, beamline=description))
    assert stage["x"].position == 0.0  # never moved


def test_the_required_dark_policy_refuses_a_run_without_darks(catalog, data_root, tmp_path):
    """dark = "required" in the description and no dark frames in the run: named."""
    stage = v1_stage()
    det = DirectImage(name="cam", func=Scene(lambda: v1_position(stage)).frame)
    text = description_toml(image_key="cam_img", motors=V1_MOTORS, monitors=MONITOR_KEYS, storage_root=str(data_root),
                            models=())
    text = text.replace("polarization_factor = 0.99", 'polarization_factor = 0.99\ndark = "required"')
    (tmp_path / "beamline.toml").write_text(text)
    derived = measure_once(catalog, det, stage, tmp_path / "beamline.toml", tmp_path)
    assert derived.stop["exit_status"] == "fail"
    assert "dark policy is 'required' and this run has no dark frames" in derived.stop["reason"]


def test_the_energy_read_from_a_data_key_of_the_run(catalog, data_root, tmp_path):
    """[energy] key = "mono_energy" (eV): runs without energy_keV are analysed once the
    monochromator's reading arrives, with its value in keV; a run that never reads it
    ends 'fail' saying so."""
    stage = v1_stage()
    det = DirectImage(name="cam", func=Scene(lambda: v1_position(stage)).frame)
    text = description_toml(image_key="cam_img", motors=V1_MOTORS, monitors=MONITOR_KEYS, storage_root=str(data_root),
                            models=(), name="mono").replace(f"keV = {ENERGY_KEV}", 'key = "mono_energy"\nunits = "eV"')
    (tmp_path / "beamline.toml").write_text(text)
    RE = RunEngine({}, call_returns_result=False)
    handle = attach(RE, tmp_path / "beamline.toml", catalog=catalog, directory=tmp_path)
    up, down = monitors()
    mono = Signal(name="mono_energy", value=ENERGY_KEV * 1000)
    try:
        read = RE(multi_position_count([det, up, down, mono], stage, MEASUREMENT_POSITIONS[:1]))[0]
        unread = RE(multi_position_count([det, up, down], stage, MEASUREMENT_POSITIONS[:1]))[0]
    finally:
        handle.close()
    assert "energy_keV" not in catalog.raw[read].start
    derived = derived_of(catalog, read)
    assert derived.stop["exit_status"] == "success", derived.stop["reason"]
    assert derived.start["energy_keV"] == pytest.approx(ENERGY_KEV)
    assert derived.start["geometry"]["source"] == "nominal"
    failed = derived_of(catalog, unread)
    assert failed.stop["exit_status"] == "fail"
    assert ("photon energy (data key 'mono_energy'" in failed.stop["reason"]
            and "never recorded" in failed.stop["reason"])
