"""Find calibrations in the catalog: the latest good one, or one named by uid."""

from __future__ import annotations

from ..errors import CalibrationError
from ..schema.calibration import ANALYSIS, MODEL_STREAM, model_from_data
from ..science.calibration.geometry_source import GeometrySource
from .derived_runs import current_run


def geometry_from_calibration(run) -> GeometrySource:
    """The detector-position model (stage or arm) stored in a derived calibration run,
    its detector's pyFAI configuration with it
    (:func:`~xrd_bluesky.schema.calibration.model_from_data`).

    Raises
    ------
    CalibrationError
        The run is not a calibration, or did not succeed.
    """
    uid = run.start["uid"]
    if run.start.get("analysis") != ANALYSIS:
        raise CalibrationError(f"run {uid} is not a calibration (analysis={run.start.get('analysis')!r})")
    if (run.stop or {}).get("exit_status") != "success":
        raise CalibrationError(f"calibration {uid} did not succeed: {(run.stop or {}).get('reason', 'not finished')}")
    table = run[MODEL_STREAM].read()
    return GeometrySource(model_from_data({k: table[k].values[0] for k in table.data_vars}), "calibration",
                          calibration_uid=uid)


def latest_calibration(processed, detector_name: str | None = None) -> GeometrySource | None:
    """The newest successful calibration made live in the ``processed`` container
    (replays never become current), of the beamline description's detector
    ``detector_name`` when given, or None."""
    run = current_run(processed, ANALYSIS, detector_name)
    return None if run is None else geometry_from_calibration(run)
