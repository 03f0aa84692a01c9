"""Find calibrations in the catalog: the latest good one, or one named by uid."""

from __future__ import annotations

import json

from ..errors import CalibrationError
from ..science.calibration.geometry_source import GeometrySource
from ..science.calibration.position_models import position_model_from_dict
from ..science.geometry import DetectorPositionModel, Poni, StagePosition
from .derived_runs import current_run

_PONI_KEYS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")


def geometry_from_calibration(run) -> GeometrySource:
    """The detector-position model (stage or arm) stored in a derived calibration run:
    the whole model as recorded (``model_json``), or, in calibrations recorded before
    it was, the stage model's parameters."""
    uid = run.start["uid"]
    if run.start.get("analysis") != "calibration":
        raise CalibrationError(f"run {uid} is not a calibration (analysis={run.start.get('analysis')!r})")
    if (run.stop or {}).get("exit_status") != "success":
        raise CalibrationError(f"calibration {uid} did not succeed: {(run.stop or {}).get('reason', 'not finished')}")
    table = run["model"].read()
    row = {k: table[k].values[0] for k in table.data_vars}
    if "model_json" in row:
        return GeometrySource(position_model_from_dict(json.loads(str(row["model_json"]))), "calibration",
                              calibration_uid=uid)
    poni = Poni(**{k: float(row[k]) for k in _PONI_KEYS}, detector=str(row["detector"]))
    ref = StagePosition(float(row["reference_x"]), float(row["reference_y"]), float(row["reference_distance"]))
    return GeometrySource(DetectorPositionModel(poni, ref), "calibration", calibration_uid=uid)


def latest_calibration(processed, detector_name: str | None = None) -> GeometrySource | None:
    """The newest successful calibration made live in the ``processed`` container
    (replays never become current), of the beamline description's detector
    ``detector_name`` when given, or None."""
    run = current_run(processed, "calibration", detector_name)
    return None if run is None else geometry_from_calibration(run)
