"""Writers that put Bluesky documents into the catalog."""

from __future__ import annotations

from bluesky_tiled_plugins import TiledWriter

#: Events per write of derived runs: their array data keys cost one request each per
#: write, so batching keeps the live chain at detector rates (the rest of a batch is
#: written at the run's stop).
DERIVED_BATCH_SIZE = 10


def run_writer(container, batch_size: int = 1) -> TiledWriter:
    """A TiledWriter into ``container`` (``catalog.raw`` or ``catalog.processed``)
    writing every ``batch_size`` events (1: each as it arrives, so live readers see it
    at once)."""
    return TiledWriter(container, batch_size=batch_size)
