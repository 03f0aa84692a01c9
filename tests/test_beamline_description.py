"""The beamline description: loaded, validated with errors naming file, key and value,
and turned into what runs and analyses need."""

from __future__ import annotations

import tomllib

import fabio.edfimage
import numpy as np
import pytest
from test_bad_input import DELETE, changed

from xrd_bluesky.beamline import EXAMPLE, load_beamline, parse_beamline
from xrd_bluesky.cli import main
from xrd_bluesky.errors import BeamlineDescriptionError
from xrd_bluesky.science.geometry import Poni, detector_model
from xrd_bluesky.sim_devices.beamline import (
    SIMULATED_DESCRIPTION,
    BeamlineConfig,
    shipped_description,
)


def example() -> dict:
    return tomllib.loads(EXAMPLE)


def write(tmp_path, text: str):
    path = tmp_path / "beamline.toml"
    path.write_text(text)
    return path


def test_the_example_loads_and_says_what_it_understood(tmp_path, capsys):
    assert main(["beamline", "--example"]) == 0
    path = write(tmp_path, capsys.readouterr().out)
    assert main(["beamline", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "detector pilatus: pyFAI Pilatus1M 1043x981 px" in out
    assert "moves on a stage (x=det_x, y=det_y, distance=det_z, mm)" in out
    assert "energy: 17 keV (fixed)" in out and f"{path}: OK" in out
    description = load_beamline(path)
    setup = description.run_setup({"uid": "u", "purpose": "measurement", "monitors": {"i0": "mine"}})
    assert setup.start["image_key"] == "pilatus_image" and setup.start["monitors"] == {"i0": "mine"}
    assert setup.start["stage_motors"] == {"x": "det_x", "y": "det_y", "distance": "det_z"}
    assert setup.start["energy_keV"] == 17.0 and setup.nominal.reference.dist == 0.2
    assert setup.instrument.saturation_counts == 1048575 and setup.instrument.beamstop is None


def test_the_simulator_is_built_from_its_shipped_description():
    """The shipped nominal geometry is the simulator's rule (the truth perturbed) for
    its default detector; another detector gets the same rule applied to it."""
    shipped = shipped_description()
    assert SIMULATED_DESCRIPTION.is_file() and shipped.simulated
    config = BeamlineConfig()
    expected = config.nominal_geometry().reference
    nominal = shipped.detector().nominal
    for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3"):
        assert getattr(nominal, key) == pytest.approx(getattr(expected, key), abs=1e-12), key
    assert config.beamstop == shipped.beamstop and config.flux_calibration == shipped.monitors.flux_calibration
    other = BeamlineConfig(detector="Pilatus1M").description()
    assert other.detector().pyfai == "Pilatus1M" and other.detector().models == ("Pilatus1M",)
    assert other.detector().nominal == BeamlineConfig(detector="Pilatus1M").nominal_geometry().reference


@pytest.mark.parametrize("path, value, culprit", [
    (("colour",), "blue", "colour is not a known key"),
    (("detectors", "pilatus", "pyfai"), "Pilatus9Z", "detectors.pilatus.pyfai = 'Pilatus9Z': unknown detector model"),
    (("detectors", "pilatus", "image_key"), 3, "detectors.pilatus.image_key = 3: expected text"),
    (("detectors", "pilatus", "saturation_counts"), 0, "detectors.pilatus.saturation_counts = 0: must be >= 1"),
    (("detectors", "pilatus", "orientation"), 7, "detectors.pilatus.orientation = 7: pyFAI orientation 1-4"),
    (("detectors", "pilatus", "mask"), "nowhere.edf", "detectors.pilatus.mask = 'nowhere.edf': no such file"),
    (("detectors", "pilatus", "motion", "kind"), "hexapod", "detectors.pilatus.motion.kind = 'hexapod': one of"),
    (("detectors", "pilatus", "motion", "y"), None, "detectors.pilatus.motion.y is missing"),
    (("detectors", "pilatus", "nominal", "distance_m"), 200.0, "detectors.pilatus.nominal.distance_m = 200.0 m"),
    (("detectors", "pilatus", "nominal", "poni1_m"), None, "detectors.pilatus.nominal.poni1_m is missing"),
    (("detectors", "pilatus", "nominal", "rot1_deg"), 1.0, "detectors.pilatus.nominal.rot1_deg is not a known key"),
    (("energy", "keV"), 1000.0, "energy.keV = 1000.0 keV: must be in"),
    (("monitors", "flux_slope"), None, "monitors.flux_slope is missing: I0 needs its counts-to-flux calibration"),
    (("monitors", "air_transmission"), 1.5, "monitors.air_transmission = 1.5"),
    (("corrections", "polarization_factor"), None, "corrections.polarization_factor is missing"),
    (("corrections", "polarization_factor"), 2.0, "corrections.polarization_factor = 2.0: must be in \\[-1, 1\\]"),
    (("corrections", "dark"), "sometimes", "corrections.dark = 'sometimes': one of"),
    (("frames", "spec_aliases", "AD_HDF5_Pilatus_6idb"), "AD_MAGIC", "= 'AD_MAGIC': not a known spec"),
    (("detectors",), {}, "describes no detector"),
])
def test_a_bad_description_names_file_key_and_value(tmp_path, path, value, culprit):
    import tomli_w

    file = write(tmp_path, tomli_w.dumps(changed(example(), path, DELETE if value is None else value)))
    with pytest.raises(BeamlineDescriptionError, match=culprit) as info:
        load_beamline(file)
    assert str(file) in str(info.value)


def test_not_toml_and_missing_files_are_named(tmp_path, capsys):
    with pytest.raises(BeamlineDescriptionError, match="not valid TOML"):
        load_beamline(write(tmp_path, "name = \n"))
    with pytest.raises(BeamlineDescriptionError, match="not found"):
        load_beamline(tmp_path / "none.toml")
    assert main(["beamline", "check", str(tmp_path / "none.toml")]) == 2
    assert "BeamlineDescriptionError" in capsys.readouterr().err


def test_a_mask_of_another_shape_is_refused_and_a_good_one_is_used(tmp_path):
    rows, cols = detector_model("Pilatus1M").shape
    fabio.edfimage.EdfImage(data=np.zeros((rows, cols + 1), np.uint8)).write(str(tmp_path / "wrong.edf"))
    data = example()
    data["detectors"]["pilatus"]["mask"] = "wrong.edf"
    with pytest.raises(BeamlineDescriptionError, match=r"wrong.edf has shape \(1043, 982\), detector Pilatus1M"):
        parse_beamline(data, source=tmp_path / "beamline.toml")
    good = np.zeros((rows, cols), np.uint8)
    good[10:20, 30:40] = 1
    fabio.edfimage.EdfImage(data=good).write(str(tmp_path / "mask.edf"))
    data["detectors"]["pilatus"]["mask"] = "mask.edf"
    instrument = parse_beamline(data, source=tmp_path / "beamline.toml").instrument()
    assert instrument.mask.sum() == 100 and instrument.mask[15, 35]


def test_pixel_size_and_shape_or_orientation_make_the_pyfai_detector():
    data = example()
    del data["detectors"]["pilatus"]["pyfai"]
    data["detectors"]["pilatus"].update(pixel_size_m=[75e-6, 75e-6], shape=[512, 1024], orientation=2)
    det = parse_beamline(data).detector()
    assert det.shape() == (512, 1024)
    model = detector_model(det.pyfai, det.pyfai_config)
    assert model.pixel1 == 75e-6 and int(model.orientation) == 2
    poni = det.nominal
    assert isinstance(poni, Poni) and poni.detector == "Detector"


def test_several_detectors_need_their_own_image_keys():
    data = example()
    data["detectors"]["eiger"] = dict(data["detectors"]["pilatus"], pyfai="Eiger1M")
    with pytest.raises(BeamlineDescriptionError, match="each needs its own image_key"):
        parse_beamline(data)
    data["detectors"]["eiger"]["image_key"] = "eiger_image"
    description = parse_beamline(data)
    assert description.run_setup({"uid": "u", "image_key": "eiger_image"}).start["detector_name"] == "eiger"
    with pytest.raises(BeamlineDescriptionError, match="several detectors"):
        description.run_setup({"uid": "u"})


def test_the_energy_as_a_data_key_in_ev():
    data = example()
    data["energy"] = {"key": "mono_energy", "units": "eV"}
    setup = parse_beamline(data).run_setup({"uid": "u"})
    assert "energy_keV" not in setup.start
    assert (setup.energy_key, setup.keV_per_unit) == ("mono_energy", 1e-3)
    data["energy"] = {"key": "mono_energy", "keV": 17.0}
    with pytest.raises(BeamlineDescriptionError, match="energy needs exactly one of keV .* or key"):
        parse_beamline(data)
    data["energy"] = {"key": "mono_energy", "units": "J"}
    with pytest.raises(BeamlineDescriptionError, match="energy.units = 'J': with key, one of keV, eV"):
        parse_beamline(data)
