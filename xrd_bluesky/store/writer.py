"""Writers that put Bluesky documents into the catalog."""

from __future__ import annotations

from bluesky_tiled_plugins import TiledWriter


def run_writer(container) -> TiledWriter:
    """A TiledWriter into ``container`` (``catalog.raw`` or ``catalog.processed``)
    that writes every event as it arrives (live readers see it at once)."""
    return TiledWriter(container, batch_size=1)
