"""Document-stream consumers: the analysis router and the analyses it dispatches."""

from .calibration import GeometryCalibration
from .integration import LiveIntegration
from .router import AnalysisRouter

__all__ = ["AnalysisRouter", "GeometryCalibration", "LiveIntegration"]
