"""Position models: the arm model against pyFAI's own goniometer, pyFAI goniometer
JSON written and read both ways, the stage model's export, the sign convention, bad files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pyFAI.goniometer import GeometryTransformation, Goniometer

from xrd_bluesky.errors import GeometryError
from xrd_bluesky.science.calibration.position_models import (
    ArmModel,
    ArmPosition,
    PyFAIGoniometerModel,
    position_model_from_dict,
    read_goniometer_json,
    write_goniometer_json,
)
from xrd_bluesky.science.geometry import DetectorPositionModel, Poni, StagePosition

WL = 0.8856e-10
REF = Poni(0.9, 0.0168, 0.16, rot1=0.002, rot2=0.0, rot3=0.001, wavelength=WL, detector="Pilatus300kw")
MODELS = [ArmModel(REF, offset_deg=0.3, scale=1.0005, calibrated_range_deg=(5.0, 39.0)),
          ArmModel(REF, plane="horizontal", offset_deg=-1.2, scale=-0.999),
          ArmModel(REF, offset_deg=0.1, carries_translation=True)]
PARAMS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")


def _same(poni: Poni, ai, tol: float = 1e-12) -> None:
    for name in PARAMS:
        assert getattr(poni, name) == pytest.approx(getattr(ai, name), abs=tol), name


@pytest.mark.parametrize("model", MODELS, ids=["vertical", "horizontal", "translation"])
def test_poni_at_matches_pyfai_goniometer_of_our_json(model, tmp_path):
    path = write_goniometer_json(model, tmp_path / "arm.json")
    gonio = Goniometer.sload(str(path))  # pyFAI reads our file (and ignores our extra key)
    for angle in (5.0, 12.3, 39.0):
        position = ArmPosition(angle, 25.0 if model.carries_translation else 0.0)
        pos = (position.angle, position.translation) if model.carries_translation else position.angle
        _same(model.poni_at(position), gonio.get_ai(pos))
    assert gonio.wavelength == WL
    assert read_goniometer_json(path) == model  # the calibrated range survives


def test_pyfai_written_json_read_back(tmp_path):
    model = MODELS[0]
    ours = tmp_path / "pyfai_ours.json"
    model.goniometer().save(str(ours))  # pyFAI's own writer: no extra key, our expressions
    assert read_goniometer_json(ours) == model.__class__(**{**model.__dict__, "calibrated_range_deg": None})
    foreign = GeometryTransformation(param_names=["d", "p1", "p2", "r1", "off"], pos_names=["tth"],
                                     dist_expr="d", poni1_expr="p1", poni2_expr="p2", rot1_expr="r1",
                                     rot2_expr="pi * (tth - off) / 180", rot3_expr="0.0")
    path = tmp_path / "foreign.json"
    Goniometer([0.9, 0.0168, 0.16, 0.002, 0.3], foreign, detector="Pilatus300kw", wavelength=WL).save(str(path))
    read = read_goniometer_json(path)
    assert isinstance(read, PyFAIGoniometerModel)
    assert read.axes == ("tth",)
    poni = read.poni_at(read.position_type(12.3))
    assert poni.rot2 == pytest.approx(math.radians(12.0), abs=1e-12)
    _same(poni, Goniometer.sload(str(path)).get_ai(12.3))
    again = position_model_from_dict(json.loads(json.dumps(read.as_dict())))
    _same(again.with_wavelength(1e-10).poni_at([12.3]), poni)
    assert again.with_wavelength(1e-10).poni_at([12.3]).wavelength == 1e-10


@pytest.mark.parametrize("model", MODELS, ids=["vertical", "horizontal", "translation"])
def test_as_dict_round_trip(model):
    data = json.loads(json.dumps(model.as_dict()))
    assert data["kind"] == model.kind
    assert position_model_from_dict(data) == model


def test_stage_model_export_equals_poni_at(tmp_path):
    stage = DetectorPositionModel(REF, StagePosition(1.0, -2.0, 300.0))
    path = write_goniometer_json(stage, tmp_path / "stage.json")
    gonio = Goniometer.sload(str(path))
    assert gonio.trans_function.pos_names == ("x", "y", "distance")
    for pos in [(1.0, -2.0, 300.0), (40.0, 30.0, 280.0), (-35.0, 12.0, 350.0)]:
        _same(stage.poni_at(StagePosition(*pos)), gonio.get_ai(pos))
    assert read_goniometer_json(path) == stage
    assert position_model_from_dict(stage.as_dict()) == stage  # no "kind": the stage


def test_sign_convention_two_theta_grows_with_arm_angle():
    """Module convention: rot2 > 0 raises 2theta towards decreasing rows; with scale > 0 a
    pixel's 2theta increases with the reading once the arm is beyond the detector's half-height."""
    model = ArmModel(replace_rot(REF), offset_deg=0.0, scale=1.0)
    pixel = (np.array([20.0]), np.array([930.0]))
    tth = [model.poni_at(ArmPosition(a)).integrator().tth(*pixel)[0] for a in (5.0, 10.0, 20.0)]
    assert np.all(np.diff(tth) > 0)
    ai = model.poni_at(ArmPosition(10.0)).integrator()
    top, bottom = ai.tth(np.array([0.0, 194.0]), np.array([930.0, 930.0]))
    assert top > bottom  # higher 2theta at lower row index
    flipped = ArmModel(replace_rot(REF), scale=-1.0)
    assert flipped.poni_at(ArmPosition(-10.0)).rot2 == pytest.approx(math.radians(10.0))
    horizontal = ArmModel(replace_rot(REF), plane="horizontal").poni_at(ArmPosition(10.0)).integrator()
    left, right = horizontal.tth(np.array([97.0, 97.0]), np.array([0.0, 1474.0]))
    assert right > left  # rot1 > 0: higher 2theta at higher column index


def replace_rot(poni: Poni) -> Poni:
    from dataclasses import replace

    return replace(poni, rot1=0.0, rot2=0.0, rot3=0.0)


def test_outside_calibrated_range_names_angle_and_range():
    model = MODELS[0]
    assert model.outside_calibrated_range(ArmPosition(20.0)) is None
    message = model.outside_calibrated_range(ArmPosition(41.5))
    assert "41.5" in message and "5-39" in message


def test_bad_models_and_positions():
    with pytest.raises(GeometryError, match="plane"):
        ArmModel(REF, plane="diagonal")
    with pytest.raises(GeometryError, match="scale"):
        ArmModel(REF, scale=0.0)
    with pytest.raises(GeometryError, match="translation"):
        MODELS[0].poni_at(ArmPosition(10.0, 5.0))
    with pytest.raises(GeometryError, match="kind"):
        position_model_from_dict({"kind": "hexapod"})


def test_bad_files_are_named(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(GeometryError, match="missing.json"):
        read_goniometer_json(missing)
    not_json = tmp_path / "not.json"
    not_json.write_text("Distance: 0.1\n")
    with pytest.raises(GeometryError, match="not.json"):
        read_goniometer_json(not_json)
    poni_like = tmp_path / "poni.json"
    poni_like.write_text(json.dumps({"dist": 0.1}))
    with pytest.raises(GeometryError, match="poni.json.*not a pyFAI goniometer"):
        read_goniometer_json(poni_like)
    content = MODELS[0].goniometer().to_dict()
    content = json.loads(json.dumps(content))
    content["trans_function"]["rot2_expr"] = "rot2_ref + undefined_name"
    bad = tmp_path / "bad_expr.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(GeometryError, match="bad_expr.json"):
        read_goniometer_json(bad)
