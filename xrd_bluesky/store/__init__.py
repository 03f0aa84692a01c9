"""The catalog: embedded Tiled server by default, remote Tiled by URI."""

from .catalog import Catalog, data_directory, open_catalog
from .lineage import LineageNode, lineage

__all__ = ["Catalog", "LineageNode", "data_directory", "lineage", "open_catalog"]
