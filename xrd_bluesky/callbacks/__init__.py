"""Document-stream consumers: the analysis router and the analyses it dispatches."""

from .geometry_source import GeometrySource
from .integration import LiveIntegration
from .router import AnalysisRouter

__all__ = ["AnalysisRouter", "GeometrySource", "LiveIntegration"]
