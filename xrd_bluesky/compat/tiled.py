"""Tiled's internals that xrd-bluesky relies on (Tiled 0.2).

* :func:`connection_pool`, :func:`replace_connection_pool`: a SQL table storage's
  connection pool, the private ``SQLStorage._connection_pool`` (a cached property of
  the frozen storage), wrapped by :mod:`xrd_bluesky.store.table_store`.
* :func:`event_ordered_sql_adapter`: a subclass of ``tiled.adapters.sql.SQLAdapter``
  that sets its row order and indexes its table (``from_catalog``'s signature,
  ``order_by_args``, ``table_name``, ``storage.connect()``).
* :class:`CatalogWriteNode`: a node of the server's catalog written to through its
  catalog adapters (``lookup_adapter``, ``create_node``, ``write``, ``append_partition``,
  ``replace_metadata``, ``close_stream``; ``tiled.catalog.adapter.STRUCTURES``) with
  the steps of the server's endpoints (``schemas.PostMetadataRequest``, the spec
  validators of ``default_validation_registry``, the deserializers of
  ``default_deserialization_registry``), offering the part of the client's API that
  bluesky-tiled-plugins' run writer uses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import uuid
from collections.abc import Coroutine
from contextlib import closing
from copy import deepcopy
from dataclasses import asdict
from typing import Any

from .releases import ReleaseRange

RELEASES = ReleaseRange("tiled", "0.2", "0.3", __name__,
                        "SQLStorage._connection_pool, SQLAdapter.from_catalog and order_by_args, "
                        "the catalog adapters' create_node, write, append_partition, replace_metadata and "
                        "close_stream, and the steps of the POST/PATCH metadata, PUT array and PATCH table "
                        "partition endpoints")
RELEASES.check()

logger = logging.getLogger(__name__)


# -- the table storage's connection pool -----------------------------------------------
def connection_pool(storage):
    """The connection pool of Tiled's SQL table ``storage`` (built on first use).

    Parameters
    ----------
    storage : tiled.storage.SQLStorage
        A table storage, as ``tiled.storage.get_storage`` returns it.
    """
    return storage._connection_pool


def replace_connection_pool(storage, pool) -> None:
    """Make Tiled's SQL table ``storage`` hand out connections from ``pool`` (an object
    with ``connect()`` and ``dispose()``) from now on: Tiled caches the pool in the
    frozen storage's ``__dict__``."""
    storage.__dict__["_connection_pool"] = pool


# -- reading tables back in event order ----------------------------------------------------
@functools.cache
def event_ordered_sql_adapter() -> type:
    """Tiled's SQL table adapter reading a Bluesky event table in ``seq_num`` order on
    PostgreSQL, through an index of its own (the class; built once, on first use, as
    ``tiled.adapters.sql`` takes seconds to import).

    Tiled orders rows by partition only, then (DuckDB, SQLite) by ``rowid``, which
    follows insertion. PostgreSQL has no such column: rows appended through different
    pooled connections land on different pages, so a scan returns them out of order and
    a stream's scalars (monitors, motor positions) no longer line up with its frames. A
    table with a ``seq_num`` column (every event table TiledWriter makes) is read
    ordered by it, the order Bluesky emitted the events in.

    Tiled names every table's index ``dataset_and_partition_index``; PostgreSQL index
    names are unique per schema, so only the first table gets one, and reading a run
    from any other would scan every run sharing that table (all runs of one stream
    layout). The first time this server touches a table, it gets an index on
    ``(_dataset_id, seq_num)`` named after the table.
    """
    from tiled.adapters.sql import SQLAdapter

    class EventOrderedSQLAdapter(SQLAdapter):
        """Tiled's ``SQLAdapter``, reading event tables in ``seq_num`` order (see
        :func:`event_ordered_sql_adapter`)."""

        _indexed: set[str] = set()
        _index_lock = threading.Lock()

        @classmethod
        def from_catalog(cls, data_source, node, /, **kwargs):
            adapter = super().from_catalog(data_source, node, **kwargs)
            if (not adapter.order_by_args and adapter.storage.dialect == "postgresql"
                    and "seq_num" in adapter.structure().columns):
                adapter.order_by_args = [{"column": "seq_num", "direction": "asc"}]
                cls._ensure_index(adapter)
            return adapter

        @classmethod
        def _ensure_index(cls, adapter) -> None:
            table = adapter.table_name
            if table in cls._indexed:
                return
            with cls._index_lock:
                if table in cls._indexed:
                    return
                try:
                    with closing(adapter.storage.connect()) as conn:
                        with conn.cursor() as cursor:
                            cursor.execute(f'CREATE INDEX IF NOT EXISTS "{table}_events" ON "{table}" '
                                           "(_dataset_id, seq_num)")
                        conn.commit()
                except Exception as exc:  # reads work without it, only slower; the next server retries
                    logger.warning("could not index table %s by run and seq_num: %s", table, exc)
                cls._indexed.add(table)

    return EventOrderedSQLAdapter


# -- writing to the catalog through its adapters -------------------------------------------
class CatalogWriteNode:
    """A node of a served catalog, written to through its catalog adapter on the
    server's event loop instead of through HTTP requests: the part of Tiled's client API
    (container, array and table clients) that bluesky-tiled-plugins' run writer uses
    for a run whose data are all in its events, each call carried out with the steps of
    the server's endpoint for it, so that the nodes and data stored are those the
    client's requests store.

    For a server with Tiled's single-user API key and no access policy (``xrd-bluesky
    serve``): access tags are those of such a server (none), and specs without a
    validator are accepted (Tiled's default settings). Calls are made from a thread
    other than the event loop's, which runs the adapters' coroutines.

    Parameters
    ----------
    adapter : tiled.catalog.adapter.CatalogNodeAdapter
        The node's catalog adapter (of the class of its structure family).
    loop : asyncio.AbstractEventLoop
        The server's event loop.
    metadata : dict
        The node's metadata as stored.
    """

    def __init__(self, adapter, loop: asyncio.AbstractEventLoop, metadata: dict):
        self._adapter, self._loop = adapter, loop
        self.metadata = metadata

    @classmethod
    def at(cls, tree, loop: asyncio.AbstractEventLoop, path: str) -> CatalogWriteNode:
        """The container at ``path`` (``a/b``) of the served catalog ``tree`` (its
        root catalog adapter), run on ``loop``.

        Raises
        ------
        KeyError
            Nothing is at ``path``, or not a container.
        """
        from tiled.structures.core import StructureFamily

        segments = [segment for segment in path.split("/") if segment]
        try:
            adapter = _run(loop, tree.lookup_adapter(segments))
        except KeyError:  # Tiled's NoEntry
            raise KeyError(f"no node at {path!r} of the catalog") from None
        if adapter.structure_family != StructureFamily.container:
            raise KeyError(f"{path!r} of the catalog is a {adapter.structure_family}, not a container")
        return cls(adapter, loop, adapter.metadata())

    # -- what the run writer reads
    def include_data_sources(self) -> CatalogWriteNode:
        """This node (a catalog adapter has its data sources)."""
        return self

    @property
    def base(self) -> CatalogWriteNode:
        """This node (a composite container is written to as a plain one)."""
        return self

    @property
    def item(self) -> dict:
        """The node's key and metadata, as a client's ``item`` has them."""
        return {"id": self._adapter.key, "attributes": {"metadata": self.metadata}}

    @property
    def dtype(self):
        """An array node's numpy data type."""
        return self._adapter.structure().data_type.to_numpy_dtype()

    @property
    def shape(self) -> tuple[int, ...]:
        """An array node's shape."""
        return tuple(self._adapter.structure().shape)

    # -- what the run writer writes
    def create_container(self, key: str | None = None, *, metadata: dict | None = None, specs=None,
                         access_tags: list[str] | None = None) -> CatalogWriteNode:
        """A new empty container in this one (as ``Container.create_container``)."""
        from tiled.structures.core import StructureFamily

        return self._new(StructureFamily.container, [], key, metadata, specs, access_tags)

    def write_array(self, array, *, key: str | None = None, metadata: dict | None = None,
                    dims: tuple[str, ...] | None = None, specs=None,
                    access_tags: list[str] | None = None) -> CatalogWriteNode:
        """A new array node in this container holding ``array`` (as
        ``Container.write_array``: the same chunks, stored with Tiled's default
        array storage)."""
        import numpy as np
        from dask.array.core import normalize_chunks
        from tiled.client.container import Container
        from tiled.structures.array import ArrayStructure, BuiltinDtype
        from tiled.structures.core import StructureFamily
        from tiled.structures.data_source import DataSource

        array = np.asarray(array)
        chunks = normalize_chunks(tuple("auto" for _ in array.shape), limit=Container._SUGGESTED_MAX_UPLOAD_SIZE,
                                  dtype=array.dtype, shape=array.shape)
        structure = ArrayStructure(shape=array.shape, chunks=chunks, dims=dims,
                                   data_type=BuiltinDtype.from_numpy_dtype(array.dtype))
        node = self._new(StructureFamily.array, [DataSource(structure=structure, structure_family="array")],
                         key, metadata, specs, access_tags)
        media_type = "application/octet-stream"
        node._write(node._adapter.write, StructureFamily.array, media_type, np.ascontiguousarray(array).tobytes())
        return node

    def create_appendable_table(self, schema, npartitions: int = 1, *, key: str | None = None,
                                metadata: dict | None = None, specs=None,
                                access_tags: list[str] | None = None) -> CatalogWriteNode:
        """A new empty table node in this container stored in the SQL table storage
        (as ``Container.create_appendable_table``), for :meth:`append_partition`."""
        from tiled.structures.core import StructureFamily
        from tiled.structures.data_source import DataSource
        from tiled.structures.table import TableStructure

        source = DataSource(structure=TableStructure.from_schema(schema, npartitions), structure_family="table",
                            mimetype="application/x-tiled-sql-table", parameters={})
        return self._new(StructureFamily.table, [source], key, metadata or {}, specs or [], access_tags)

    def append_partition(self, partition: int, table) -> None:
        """Append the rows of ``table`` (a pyarrow table) to ``partition`` of this table node."""
        from tiled.serialization.table import serialize_arrow
        from tiled.structures.core import StructureFamily
        from tiled.utils import APACHE_ARROW_FILE_MIME_TYPE

        if partition > self._adapter.structure().npartitions:
            raise ValueError(f"Table has {self._adapter.structure().npartitions} partitions")
        body = bytes(serialize_arrow(APACHE_ARROW_FILE_MIME_TYPE, table, {}))
        self._write(self._adapter.append_partition, StructureFamily.table, APACHE_ARROW_FILE_MIME_TYPE, body,
                    partition)

    def update_metadata(self, metadata: dict | None = None, specs=None, access_tags=None, *,
                        drop_revision: bool = False) -> None:
        """Update this node's metadata as ``dict.update`` would, recursively (as the
        client's ``update_metadata``); its specs and access tags stay."""
        from tiled.client.metadata_update import apply_update_patch

        if specs is not None or access_tags:
            raise NotImplementedError("CatalogWriteNode updates metadata only, not specs or access tags")
        updated = apply_update_patch(deepcopy(self.metadata), _as_json(metadata or {}))

        async def replace() -> dict:
            validated = await _validate_specs(self._adapter.specs or [], updated, self._adapter, None, None)
            # None: the specs and access tags stay as they are
            await self._adapter.replace_metadata(metadata=validated, specs=None, access_tags=None,
                                                 drop_revision=drop_revision)
            return validated

        self.metadata = _run(self._loop, replace())

    def close_stream(self) -> None:
        """Declare the end of the writes to this node (to Tiled's live subscribers)."""
        _run(self._loop, self._adapter.close_stream())

    # -- the steps of the server's endpoints
    def _new(self, structure_family, data_sources: list, key: str | None, metadata: dict | None, specs,
             access_tags: list[str] | None) -> CatalogWriteNode:
        """A new node in this container, created as ``POST /metadata`` creates one."""
        from tiled.access_control.protocols import normalize_access_tags
        from tiled.catalog.adapter import STRUCTURES
        from tiled.client.utils import normalize_specs
        from tiled.server.schemas import PostMetadataRequest

        body = PostMetadataRequest.model_validate(_as_json({
            "id": key or str(uuid.uuid4()), "metadata": metadata or {}, "structure_family": structure_family,
            "specs": normalize_specs(specs or []), "data_sources": [asdict(source) for source in data_sources],
            "access_tags": access_tags}))

        async def create():
            structure = None if not body.data_sources else body.data_sources[0].structure
            await _validate_specs(body.specs, body.metadata, None, body.structure_family, structure)
            node = await self._adapter.create_node(metadata=body.metadata, structure_family=body.structure_family,
                                                   key=body.id, specs=body.specs, data_sources=body.data_sources,
                                                   access_tags=normalize_access_tags())
            return STRUCTURES[body.structure_family](node.context, node.node)

        return CatalogWriteNode(_run(self._loop, create()), self._loop, body.metadata)

    def _write(self, write, structure_family, media_type: str, body: bytes, *args) -> None:
        """Write serialized ``body`` by the catalog adapter's ``write`` method (as the
        server's endpoint does, with Tiled's deserializer of ``media_type``)."""
        from tiled.media_type_registration import default_deserialization_registry

        deserializer = default_deserialization_registry.dispatch(structure_family, media_type)
        _run(self._loop, write(media_type, deserializer, self._adapter, body, *args))


def _run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine) -> Any:
    """Run ``coroutine`` on ``loop`` (from another thread) and return its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


def _as_json(content: dict) -> dict:
    """``content`` as the server receives it from a client: serialized as the client
    serializes it (numpy values, dates) and parsed again."""
    import orjson
    from tiled.utils import safe_json_dump

    return orjson.loads(safe_json_dump(content))


async def _validate_specs(specs: list, metadata: dict, entry, structure_family, structure) -> dict:
    """``metadata`` as the validators of Tiled's registry for ``specs`` leave it (the
    server's ``validate_specs``, least constrained spec first); specs without a
    validator pass.

    Raises
    ------
    tiled.validation_registration.ValidationError
        A validator rejected the node.
    """
    from tiled.utils import ensure_awaitable
    from tiled.validation_registration import default_validation_registry

    for spec in reversed(specs):
        if spec in default_validation_registry:
            result = await ensure_awaitable(default_validation_registry(spec), spec, metadata, entry,
                                            structure_family, structure)
            if result is not None:
                metadata = result
    return metadata
