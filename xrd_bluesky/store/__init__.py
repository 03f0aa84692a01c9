"""The catalog: embedded Tiled server by default, remote Tiled by URI."""

from .catalog import Catalog, data_directory, open_catalog

__all__ = ["Catalog", "data_directory", "open_catalog"]
