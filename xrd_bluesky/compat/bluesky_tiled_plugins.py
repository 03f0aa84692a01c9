"""bluesky-tiled-plugins' internals that xrd-bluesky relies on (bluesky-tiled-plugins 2.0).

* :class:`WholeRunTiledWriter`: a ``TiledWriter`` whose ``_factory`` builds a subclass
  of the private ``_RunWriter`` (its ``_close_stream_tree`` and ``root_node``, the
  writer's ``_batch_size``, ``_max_array_size`` and ``_normalizer``) and of
  ``RunNormalizer`` (its ``emit`` and ``dispatcher``).
"""

from __future__ import annotations

from bluesky_tiled_plugins import TiledWriter
from bluesky_tiled_plugins.writing import tiled_writer as _plugin_writer
from event_model import DocumentNames, schema_validators

from .releases import ReleaseRange

RELEASES = ReleaseRange("bluesky-tiled-plugins", "2.0", "2.1", __name__,
                        "TiledWriter._factory and the attributes it reads, _RunWriter and its _close_stream_tree, "
                        "RunNormalizer.emit and .dispatcher")
RELEASES.check()


class _WholeRunWriter(_plugin_writer._RunWriter):
    """bluesky-tiled-plugins' writer of one run, closing only the run's node at its stop."""

    def _close_stream_tree(self) -> None:
        if self.root_node is not None:
            self.root_node.close_stream()


class _RunNormalizer(_plugin_writer.RunNormalizer):
    """bluesky-tiled-plugins' ``RunNormalizer``, checking each event against
    event-model's schema without walking its values: the schema leaves the values of an
    event's ``data`` and ``timestamps`` free (any JSON), so an event with them set to
    0 passes or fails as the event does, and a run's arrays are not walked once per
    event."""

    def emit(self, name, doc):
        if name != DocumentNames.event or not all(isinstance(doc.get(key), dict) for key in ("data", "timestamps")):
            return super().emit(name, doc)
        schema_validators[name].validate({**doc, "data": dict.fromkeys(doc["data"], 0),
                                          "timestamps": dict.fromkeys(doc["timestamps"], 0)})
        self.dispatcher.process(name, doc)


class WholeRunTiledWriter(TiledWriter):
    """bluesky-tiled-plugins' ``TiledWriter`` for runs written whole, at their stop: the
    same nodes and content, but each run's stream tree is closed (for Tiled's live
    subscribers) by one request, the run's, not by one per stream, table and array,
    since none of them was written before the run's end. Documents are normalized as
    ``TiledWriter`` does; no backups are made. Its parameters are ``TiledWriter``'s.
    """

    def _factory(self, name, doc):
        run_writer = _WholeRunWriter(self.client, batch_size=self._batch_size, max_array_size=self._max_array_size)
        normalizer_class = _RunNormalizer if self._normalizer is _plugin_writer.RunNormalizer else self._normalizer
        normalizer = normalizer_class(patches=self.patches, spec_to_mimetype=self.spec_to_mimetype)
        normalizer.subscribe(run_writer)
        return [normalizer], []
