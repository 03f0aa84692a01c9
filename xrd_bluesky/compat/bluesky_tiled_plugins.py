"""bluesky-tiled-plugins' internals that xrd-bluesky relies on (bluesky-tiled-plugins 2.0).

* :class:`WholeRunTiledWriter` and :class:`FlushingTiledWriter`: two ``TiledWriter`` subclasses
  whose ``_factory`` builds a subclass of the private ``_RunWriter`` (the writer's
  ``_batch_size``, ``_max_array_size`` and ``_normalizer``) and of ``RunNormalizer``
  (its ``emit`` and ``dispatcher``). The run writers use ``_close_stream_tree`` and
  ``root_node`` (whole runs), and what its ``stop`` writes cached data with (flushing
  runs): ``_internal_data_cache``, ``_desc_nodes``, ``_write_internal_data``,
  ``_external_data_cache``, ``_update_consolidator``, ``_update_data_source_for_node``
  and ``Patch.combine_patches``.
"""

from __future__ import annotations

from collections import defaultdict

from bluesky_tiled_plugins import TiledWriter
from bluesky_tiled_plugins.writing import tiled_writer as _plugin_writer
from event_model import DocumentNames, schema_validators

from .releases import ReleaseRange

RELEASES = ReleaseRange("bluesky-tiled-plugins", "2.0", "2.1", __name__,
                        "TiledWriter._factory and the attributes it reads, _RunWriter (its _close_stream_tree, "
                        "root_node, data caches and the methods its stop writes them with), RunNormalizer.emit and "
                        ".dispatcher")
RELEASES.check()


class _RunWriter(_plugin_writer._RunWriter):
    """bluesky-tiled-plugins' writer of one run, writing what it cached (events and
    stream datums, up to its batch size) on :meth:`flush` as well as at the stop."""

    def flush(self) -> None:
        """Write the cached events, a table append per stream, and the cached stream
        datums, a data-source update per stream resource (as the stop does)."""
        for desc_name, rows in self._internal_data_cache.items():
            if rows:
                self._write_internal_data(rows, desc_node=self._desc_nodes[desc_name])
                rows.clear()
        patches = defaultdict(list)
        for stream_datum in self._external_data_cache.values():
            node, consolidator, patch = self._update_consolidator(stream_datum)
            patches[(node, consolidator)].append(patch)
        self._external_data_cache.clear()
        for (node, consolidator), node_patches in patches.items():
            self._update_data_source_for_node(node, consolidator.get_data_source(),
                                              patch=_plugin_writer.Patch.combine_patches(node_patches))

    def stop(self, doc):
        self.flush()  # the stop then finds the caches empty
        super().stop(doc)


class _WholeRunWriter(_RunWriter):
    """A run writer closing only the run's node at its stop."""

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


class _OwnRunWriterTiledWriter(TiledWriter):
    """A ``TiledWriter`` writing each run with :attr:`run_writer_class` (normalized as
    ``TiledWriter`` does, without backups); its parameters are ``TiledWriter``'s."""

    run_writer_class: type[_RunWriter] = _RunWriter

    def _factory(self, name, doc):
        self.run_writer = self.run_writer_class(self.client, batch_size=self._batch_size,
                                                max_array_size=self._max_array_size)
        normalizer_class = _RunNormalizer if self._normalizer is _plugin_writer.RunNormalizer else self._normalizer
        normalizer = normalizer_class(patches=self.patches, spec_to_mimetype=self.spec_to_mimetype)
        normalizer.subscribe(self.run_writer)
        return [normalizer], []


class FlushingTiledWriter(_OwnRunWriterTiledWriter):
    """bluesky-tiled-plugins' ``TiledWriter`` of one run at a time that writes what it
    cached (events and stream datums, up to ``batch_size``) when told to
    (:meth:`flush`): the same nodes and content, written when its caller chooses."""

    def flush(self) -> None:
        """Write what the current run's writer cached (nothing before its start)."""
        run_writer = getattr(self, "run_writer", None)
        if run_writer is not None:
            run_writer.flush()


class WholeRunTiledWriter(_OwnRunWriterTiledWriter):
    """bluesky-tiled-plugins' ``TiledWriter`` for runs written whole, at their stop: the
    same nodes and content, but each run's stream tree is closed (for Tiled's live
    subscribers) by one request, the run's, not by one per stream, table and array,
    since none of them was written before the run's end."""

    run_writer_class = _WholeRunWriter
