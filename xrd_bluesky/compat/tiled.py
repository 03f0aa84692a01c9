"""Tiled's internals that xrd-bluesky relies on (Tiled 0.2).

* :func:`connection_pool`, :func:`replace_connection_pool`: a SQL table storage's
  connection pool, the private ``SQLStorage._connection_pool`` (a cached property of
  the frozen storage), wrapped by :mod:`xrd_bluesky.store.table_store`.
* :func:`event_ordered_sql_adapter`: a subclass of ``tiled.adapters.sql.SQLAdapter``
  that sets its row order and indexes its table (``from_catalog``'s signature,
  ``order_by_args``, ``table_name``, ``storage.connect()``).
* :class:`CatalogWriteNode`: the part of the client's API that bluesky-tiled-plugins'
  run writer uses, staging a run's nodes in memory with the steps of the server's
  endpoints (``schemas.PostMetadataRequest``, the spec validators of
  ``default_validation_registry``, the deserializers of
  ``default_deserialization_registry``) and committing them as ``create_node`` would,
  in one transaction: the storage adapters' ``init_storage`` (chosen as ``create_node``
  chooses them: ``STORAGE_ADAPTERS_BY_MIMETYPE``, ``DEFAULT_CREATION_MIMETYPE``,
  ``supported_storage``, the context's ``writable_storage``) and ``from_catalog``;
  the catalog's ORM (``orm.Node``, ``orm.DataSource``, ``orm.Structure``,
  ``orm.Asset``, ``orm.DataSourceAssetAssociation``, ``_prepare_structure``,
  ``compute_structure_id``, the context's ``session()``, the adapter's ``insert``);
  the announcements of ``create_node`` and ``close_stream`` (``streaming_cache``,
  ``webhook_dispatcher``, ``STRUCTURES``); ``delete_physical_asset`` and
  ``Collision``.
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
from dataclasses import asdict, dataclass, field
from typing import Any

from .releases import ReleaseRange

RELEASES = ReleaseRange("tiled", "0.2", "0.3", __name__,
                        "SQLStorage._connection_pool, SQLAdapter.from_catalog and order_by_args, "
                        "CatalogNodeAdapter.create_node's rows, storage choice and announcements (re-enacted "
                        "for a whole run in one transaction), the storage adapters' init_storage, and the "
                        "steps of the POST/PATCH metadata, PUT array and PATCH table partition endpoints")
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


# -- writing a run into the catalog in one transaction --------------------------------------
class CatalogWriteNode:
    """A node of a served catalog as bluesky-tiled-plugins' run writer writes to it:
    the part of Tiled's client API (container, array and table clients) that the writer
    uses for a run whose data are all in its events, without an HTTP request per call.

    The node :meth:`at` a path is an existing container. Every node created under it is
    *staged*: checked as the server's endpoint checks the request that would create it
    (the body parsed with ``schemas.PostMetadataRequest``, the spec validators of Tiled's
    ``default_validation_registry``, the data serialized as the client sends them and
    parsed with Tiled's deserializers) and held in memory until :meth:`commit`. The
    commit writes the data with Tiled's storage adapters (``init_storage``, ``write``,
    ``append_partition``), then enters every staged node in the catalog in one database
    transaction (the rows ``create_node`` writes) and announces the new nodes to Tiled's
    live subscribers as ``create_node`` and ``close_stream`` do. Readers see the run
    whole or not at all; a failed commit leaves no node in the catalog and removes the
    data it stored.

    For a server with Tiled's single-user API key and no access policy (``xrd-bluesky
    serve``): nodes get the access tags of such a server (none), and specs without a
    validator are accepted (Tiled's default settings). Calls are made from a thread
    other than the event loop's, which runs the catalog's coroutines.
    """

    def __init__(self, stage: _Stage, node: _StagedNode | None):
        self._stage, self._node = stage, node

    @classmethod
    def at(cls, tree, loop: asyncio.AbstractEventLoop, path: str) -> CatalogWriteNode:
        """The container at ``path`` (``a/b``) of the served catalog ``tree`` (its
        root catalog adapter), whose coroutines run on ``loop``.

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
        return cls(_Stage(adapter, loop, segments), None)

    # -- what the run writer reads
    def include_data_sources(self) -> CatalogWriteNode:
        """This node (its data sources are at hand)."""
        return self

    @property
    def base(self) -> CatalogWriteNode:
        """This node (a composite container is written to as a plain one)."""
        return self

    @property
    def metadata(self) -> dict:
        """The node's metadata (as it will be stored)."""
        return self._staged().metadata

    @property
    def item(self) -> dict:
        """The node's key and metadata, as a client's ``item`` has them."""
        return {"id": self._staged().key, "attributes": {"metadata": self.metadata}}

    @property
    def dtype(self):
        """An array node's numpy data type."""
        return self._staged().structure().data_type.to_numpy_dtype()

    @property
    def shape(self) -> tuple[int, ...]:
        """An array node's shape."""
        return tuple(self._staged().structure().shape)

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
        node._stage_data("write", StructureFamily.array, "application/octet-stream",
                         np.ascontiguousarray(array).tobytes(), array.dtype, array.shape)
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

        npartitions = self._staged().structure().npartitions
        if partition > npartitions:
            raise ValueError(f"Table has {npartitions} partitions")
        self._stage_data("append_partition", StructureFamily.table, APACHE_ARROW_FILE_MIME_TYPE,
                         bytes(serialize_arrow(APACHE_ARROW_FILE_MIME_TYPE, table, {})), partition=partition)

    def update_metadata(self, metadata: dict | None = None, specs=None, access_tags=None, *,
                        drop_revision: bool = False) -> None:
        """Update this node's metadata as ``dict.update`` would, recursively (as the
        client's ``update_metadata``; a staged node has no revisions to keep); its
        specs and access tags stay."""
        from tiled.client.metadata_update import apply_update_patch

        if specs is not None or access_tags:
            raise NotImplementedError("CatalogWriteNode updates metadata only, not specs or access tags")
        node = self._staged()
        updated = apply_update_patch(deepcopy(node.metadata), _as_json(metadata or {}))
        node.metadata = _validate_specs(self._stage.loop, node.specs, updated, node, None, None)

    def close_stream(self) -> None:
        """Declare the end of the writes to this node (to Tiled's live subscribers, at
        the commit)."""
        self._staged().closed = True

    def commit(self) -> None:
        """Store every node staged under this one (see the class docstring).

        Raises
        ------
        tiled.catalog.adapter.Collision
            A node of the same key is already in the catalog (nothing is stored).
        """
        self._stage.commit()

    # -- staging
    def _staged(self) -> _StagedNode:
        if self._node is None:
            raise NotImplementedError("CatalogWriteNode writes into the nodes it creates, not into existing ones")
        return self._node

    def _new(self, structure_family, data_sources: list, key: str | None, metadata: dict | None, specs,
             access_tags: list[str] | None) -> CatalogWriteNode:
        """A new staged node in this container, checked as ``POST /metadata`` checks it."""
        from tiled.catalog.adapter import Collision
        from tiled.client.utils import normalize_specs
        from tiled.server.schemas import PostMetadataRequest

        body = PostMetadataRequest.model_validate(_as_json({
            "id": key or str(uuid.uuid4()), "metadata": metadata or {}, "structure_family": structure_family,
            "specs": normalize_specs(specs or []), "data_sources": [asdict(source) for source in data_sources],
            "access_tags": access_tags}))
        structure = None if not body.data_sources else body.data_sources[0].structure
        validated = _validate_specs(self._stage.loop, body.specs, body.metadata, None, body.structure_family,
                                    structure)
        siblings = self._stage.top if self._node is None else self._node.children
        if body.id in siblings:
            raise Collision("/" + "/".join(self._path() + [body.id]))
        node = _StagedNode(body.id, body.structure_family, validated, body.specs,
                           body.data_sources[0] if body.data_sources else None, self._path() + [body.id])
        siblings[body.id] = node
        return CatalogWriteNode(self._stage, node)

    def _path(self) -> list[str]:
        return self._stage.path if self._node is None else self._node.path

    def _stage_data(self, method: str, structure_family, media_type: str, body: bytes, *args,
                    partition: int | None = None) -> None:
        """Keep data for :meth:`commit`, parsed from ``body`` by Tiled's deserializer
        of ``media_type`` as the server's endpoint parses it."""
        from tiled.media_type_registration import default_deserialization_registry

        deserializer = default_deserialization_registry.dispatch(structure_family, media_type)
        data = deserializer(body, *args)
        self._staged().data.append((method, data) if partition is None else (method, partition, data))


@dataclass(eq=False)
class _StagedNode:
    """A node created through a :class:`CatalogWriteNode`, not yet in the catalog."""

    key: str
    structure_family: Any
    metadata: dict
    specs: list
    source: Any  # its data source, as the request body has it (None for a container)
    path: list[str]
    children: dict[str, _StagedNode] = field(default_factory=dict)
    data: list[tuple] = field(default_factory=list)  # (adapter method, *arguments), in the order written
    closed: bool = False

    # what a spec validator reads of the node it validates
    def structure(self):
        return None if self.source is None else self.source.structure

    async def items_range(self) -> list[tuple[str, _StagedNode]]:
        return list(self.children.items())


class _Stage:
    """The nodes staged under one existing container (``adapter``, at ``path``) and
    their commit."""

    def __init__(self, adapter, loop: asyncio.AbstractEventLoop, path: list[str]):
        self.adapter, self.loop, self.path = adapter, loop, path
        self.top: dict[str, _StagedNode] = {}

    def nodes(self) -> list[list[_StagedNode]]:
        """The staged nodes level by level, parents before their children."""
        levels, level = [], list(self.top.values())
        while level:
            levels.append(level)
            level = [child for node in level for child in node.children.values()]
        return levels

    def commit(self) -> None:
        """Store the staged nodes (see :meth:`CatalogWriteNode.commit`): their data
        first, then their catalog rows in one transaction; on failure, the data
        stored is removed again."""
        from tiled.catalog import orm
        from tiled.catalog.adapter import Collision

        if taken := _run(self.loop, self._taken()):  # before any storage is written at their paths
            raise Collision(", ".join("/" + "/".join(self.path + [key]) for key in taken))
        levels = self.nodes()
        rows = {node: orm.Node(key=node.key, metadata_=node.metadata, structure_family=node.structure_family,
                               specs=[spec.model_dump() for spec in node.specs])
                for level in levels for node in level}
        sources: dict[_StagedNode, Any] = {}
        try:
            for node in rows:
                if node.source is not None:
                    sources[node] = self._init_storage(node)
                    self._write(node, rows[node], sources[node])
            _run(self.loop, self._enter(levels, rows, sources))
        except BaseException:
            for source in sources.values():
                _delete_stored(source)
            raise
        self.top = {}
        _run(self.loop, self._announce(levels, rows))

    async def _taken(self) -> list[str]:
        """The keys of the staged top nodes already in the container."""
        from sqlalchemy import select
        from tiled.catalog import orm

        async with self.adapter.context.session() as db:
            found = await db.execute(select(orm.Node.key).where(orm.Node.parent == self.adapter.node.id,
                                                                orm.Node.key.in_(list(self.top))))
            return [key for (key,) in found]

    def _init_storage(self, node: _StagedNode):
        """Initialize ``node``'s storage with Tiled's storage adapter (as
        ``create_node`` does); its data source as initialized."""
        from tiled.catalog.adapter import DEFAULT_CREATION_MIMETYPE, STORAGE_ADAPTERS_BY_MIMETYPE
        from tiled.storage import FileStorage

        source = node.source.model_copy(deep=True)
        source.mimetype = source.mimetype or DEFAULT_CREATION_MIMETYPE[source.structure_family]
        storage_class = STORAGE_ADAPTERS_BY_MIMETYPE[source.mimetype]
        supported = tuple(getattr(storage_class, "supported_storage", lambda: {FileStorage})())
        storage = next((storage for storage in self.adapter.context.writable_storage.values()
                        if isinstance(storage, supported)), None)
        if storage is None:
            raise RuntimeError(f"the catalog has no writable storage for {source.mimetype}")
        return self._done(storage_class.init_storage(storage, source, node.path))

    def _write(self, node: _StagedNode, row, source) -> None:
        """Write ``node``'s data into its storage (``source``) with the adapter the
        catalog reads it with (as the catalog adapter's ``write`` and
        ``append_partition`` do)."""
        adapter = self.adapter.context.adapters_by_mimetype[source.mimetype].from_catalog(source, row,
                                                                                         **source.parameters)
        for method, *args in node.data:
            self._done(getattr(adapter, method)(*args))

    def _done(self, result):
        """``result`` of a storage adapter's method, which may be a coroutine function."""
        import inspect

        return _run(self.loop, result) if inspect.isawaitable(result) else result

    async def _enter(self, levels: list[list[_StagedNode]], rows: dict, sources: dict) -> None:
        """Enter the staged nodes (``rows``, their initialized ``sources``) in the
        catalog in one transaction: the rows ``create_node`` writes."""
        from sqlalchemy.exc import IntegrityError
        from tiled.catalog import orm
        from tiled.catalog.adapter import Collision, _prepare_structure
        from tiled.catalog.utils import compute_structure_id

        async with self.adapter.context.session() as db:
            structures = {node: _prepare_structure(node.structure_family, source.structure)
                          for node, source in sources.items()}
            ids = {node: compute_structure_id(structure) for node, structure in structures.items()}
            if structures:
                await db.execute(self.adapter.insert(orm.Structure).values(
                    [{"id": ids[node], "structure": structure} for node, structure in structures.items()]
                ).on_conflict_do_nothing(index_elements=["id"]))
            assets = await self._asset_ids(db, [asset for source in sources.values() for asset in source.assets])
            for node, source in sources.items():
                rows[node].data_sources = [orm.DataSource(
                    structure_family=source.structure_family, mimetype=source.mimetype,
                    management=source.management, parameters=source.parameters, properties=source.properties,
                    structure_id=ids[node], asset_associations=[
                        orm.DataSourceAssetAssociation(asset_id=assets[asset.data_uri], parameter=asset.parameter,
                                                       num=asset.num) for asset in source.assets])]
            parents = {node: self.adapter.node.id for node in levels[0]} if levels else {}
            for level in levels:
                for node in level:
                    rows[node].parent = parents[node]
                db.add_all([rows[node] for node in level])
                try:
                    await db.flush()
                except IntegrityError as exc:
                    if exc.code == "gkpj":  # a unique constraint failed: the key is taken
                        raise Collision("/" + "/".join(self.path)) from None
                    raise
                parents.update((child, rows[node].id) for node in level for child in node.children.values())
            await db.commit()

    async def _asset_ids(self, db, assets: list) -> dict[str, int]:
        """The catalog's id of each asset's ``data_uri``, its row inserted if new."""
        from sqlalchemy import select
        from tiled.catalog import orm

        by_uri = {asset.data_uri: asset for asset in assets}
        if not by_uri:
            return {}
        found = await db.execute(select(orm.Asset.data_uri, orm.Asset.id).where(orm.Asset.data_uri.in_(by_uri)))
        ids = dict(found.all())
        new = [asset for uri, asset in by_uri.items() if uri not in ids]
        if new:
            inserted = await db.execute(self.adapter.insert(orm.Asset).values(
                [{"data_uri": asset.data_uri, "is_directory": asset.is_directory, "size": asset.size}
                 for asset in new]).returning(orm.Asset.data_uri, orm.Asset.id))
            ids.update(inserted.all())
        return ids

    async def _announce(self, levels: list[list[_StagedNode]], rows: dict) -> None:
        """Tell Tiled's live subscribers and webhooks of the new top nodes (as
        ``create_node`` tells them of a new child) and of the streams closed (as
        ``close_stream`` does)."""
        from datetime import UTC, datetime

        from tiled.catalog.adapter import STRUCTURES
        from tiled.server.schemas import ContainerChildCreatedEvent

        context, parent = self.adapter.context, self.adapter.node
        for node in levels[0] if levels else []:
            specs = [spec.model_dump() for spec in node.specs]
            if context.streaming_cache:
                sequence = await context.streaming_cache.incr_seq(parent.id)
                await context.streaming_cache.set(parent.id, sequence, {
                    "type": "container-child-created", "sequence": sequence,
                    "timestamp": datetime.now().isoformat(), "key": node.key,
                    "structure_family": node.structure_family, "specs": specs, "metadata": node.metadata,
                    "data_sources": [source.model_dump() for source in _with_ids(node, rows[node])],
                    "access_tags": []})
            if context.webhook_dispatcher:
                await context.webhook_dispatcher.dispatch(ContainerChildCreatedEvent(
                    timestamp=datetime.now(tz=UTC), key=node.key, structure_family=node.structure_family,
                    specs=specs, metadata=node.metadata, path=node.path), node_id=parent.id)
        for node, row in rows.items():
            if node.closed:
                await STRUCTURES[node.structure_family](context, row).close_stream()


def _with_ids(node: _StagedNode, row) -> list:
    """``node``'s data sources as ``create_node`` announces them: with their catalog ids."""
    if node.source is None:
        return []
    source = node.source.model_copy()
    source.id = row.data_sources[0].id
    return [source]


def _delete_stored(source) -> None:
    """Remove the data stored for a data source whose node did not enter the catalog."""
    from tiled.catalog.adapter import delete_physical_asset

    for asset in source.assets:
        try:
            delete_physical_asset(asset.data_uri, asset.is_directory, source.parameters.get("table_name"),
                                  source.parameters.get("dataset_id"))
        except Exception as exc:  # leave the rest; the failure that got us here is raised
            logger.warning("could not remove %s of a run not written: %s", asset.data_uri, exc)


def _run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine) -> Any:
    """Run ``coroutine`` on ``loop`` (from another thread) and return its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


def _as_json(content: dict) -> dict:
    """``content`` as the server receives it from a client: serialized as the client
    serializes it (numpy values, dates) and parsed again."""
    import orjson
    from tiled.utils import safe_json_dump

    return orjson.loads(safe_json_dump(content))


def _validate_specs(loop: asyncio.AbstractEventLoop, specs: list, metadata: dict, entry, structure_family,
                    structure) -> dict:
    """``metadata`` as the validators of Tiled's registry for ``specs`` leave it (the
    server's ``validate_specs``, least constrained spec first, run on ``loop``); specs
    without a validator pass.

    Raises
    ------
    tiled.validation_registration.ValidationError
        A validator rejected the node.
    """
    from tiled.utils import ensure_awaitable
    from tiled.validation_registration import default_validation_registry

    validated = [spec for spec in reversed(specs) if spec in default_validation_registry]

    async def validate(metadata: dict) -> dict:
        for spec in validated:
            result = await ensure_awaitable(default_validation_registry(spec), spec, metadata, entry,
                                            structure_family, structure)
            if result is not None:
                metadata = result
        return metadata

    return _run(loop, validate(metadata)) if validated else metadata
