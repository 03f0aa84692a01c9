"""One router that dispatches each run to the analysis its ``purpose`` asks for."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from event_model import RunRouter

from ..science.calibration import CalibrationSettings
from ..science.geometry import DetectorPositionModel
from ..science.geometry_source import GeometrySource
from ..science.image_formation import Beamstop
from .calibration import GeometryCalibration
from .derived import Emit
from .integration import LiveIntegration

logger = logging.getLogger(__name__)


class AnalysisRouter(RunRouter):
    """Route every run to its live analysis; derived documents go to ``emit``.

    Parameters
    ----------
    emit : callable
        Receives every derived run's ``(name, doc)`` (e.g. the processed writer).
    geometry : callable
        Returns the current :class:`GeometrySource` (latest calibration, a PONI file,
        or the simulator's truth) when a run starts.
    beamstop : Beamstop, optional
        The beamline's beamstop, masked in integrations.
    npt : int
        Radial bins of the integrations.
    nominal : DetectorPositionModel, optional
        Nominal geometry that calibrations start from; without it calibration runs
        are not analysed.
    export_dir : path, optional
        Where calibrations export PONI files.
    calibration_settings : CalibrationSettings
        Thresholds of the automatic calibration.
    """

    def __init__(self, emit: Emit, geometry: Callable[[], GeometrySource | None], *,
                 beamstop: Beamstop | None = None, npt: int = 2000,
                 nominal: DetectorPositionModel | None = None, export_dir: str | Path | None = None,
                 calibration_settings: CalibrationSettings = CalibrationSettings()):
        self.emit = emit
        self.geometry = geometry
        self.beamstop = beamstop
        self.npt = npt
        self.nominal = nominal
        self.export_dir = export_dir
        self.calibration_settings = calibration_settings
        super().__init__([self._factory])

    def _factory(self, name: str, start_doc: dict):
        purpose = start_doc.get("purpose")
        if purpose == "measurement":
            geometry = self.geometry()
            if geometry is None:
                logger.warning("run %s: no geometry available, not integrated", start_doc["uid"])
                return [], []
            return [LiveIntegration(self.emit, geometry, npt=self.npt, beamstop=self.beamstop)], []
        if purpose == "calibration" and self.nominal is not None:
            return [GeometryCalibration(self.emit, self.nominal, export_dir=self.export_dir,
                                        beamstop=self.beamstop, settings=self.calibration_settings)], []
        return [], []
