"""The beamline description (what the hardware is) and :func:`attach`, which wires
the writers and the analysis router onto any RunEngine."""

from .attach import Attachment, LiveInputs, analysis_router, attach
from .description import (
           EXAMPLE,
           BeamlineDescription,
           DetectorDescription,
           load_beamline,
           parse_beamline,
)

__all__ = ["Attachment", "BeamlineDescription", "DetectorDescription", "EXAMPLE", "LiveInputs", "analysis_router",
           "attach", "load_beamline", "parse_beamline"]
