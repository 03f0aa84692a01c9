"""One router that dispatches each run to the analysis its ``purpose`` asks for."""

from __future__ import annotations

import logging
from typing import Callable

from event_model import RunRouter

from ..science.image_formation import Beamstop
from .derived import Emit
from .geometry_source import GeometrySource
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
    """

    def __init__(self, emit: Emit, geometry: Callable[[], GeometrySource | None], *,
                 beamstop: Beamstop | None = None, npt: int = 2000):
        self.emit = emit
        self.geometry = geometry
        self.beamstop = beamstop
        self.npt = npt
        super().__init__([self._factory])

    def _factory(self, name: str, start_doc: dict):
        purpose = start_doc.get("purpose")
        if purpose == "measurement":
            geometry = self.geometry()
            if geometry is None:
                logger.warning("run %s: no geometry available, not integrated", start_doc["uid"])
                return [], []
            return [LiveIntegration(self.emit, geometry, npt=self.npt, beamstop=self.beamstop)], []
        return [], []
