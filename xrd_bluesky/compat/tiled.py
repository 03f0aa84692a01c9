"""Tiled's internals that xrd-bluesky relies on (Tiled 0.2).

* :func:`connection_pool`, :func:`replace_connection_pool`: a SQL table storage's
  connection pool, the private ``SQLStorage._connection_pool`` (a cached property of
  the frozen storage), wrapped by :mod:`xrd_bluesky.store.table_store`.
* :func:`event_ordered_sql_adapter`: a subclass of ``tiled.adapters.sql.SQLAdapter``
  that sets its row order and indexes its table (``from_catalog``'s signature,
  ``order_by_args``, ``table_name``, ``storage.connect()``).
* :func:`context_with_transport`: a client ``Context`` whose ``http_client`` (made, and
  used, in ``Context.__init__``) is replaced by one with another transport.
"""

from __future__ import annotations

import functools
import logging
import threading
from contextlib import closing

import httpx
from tiled.client.context import Context
from tiled.client.transport import Transport

from .releases import ReleaseRange

RELEASES = ReleaseRange("tiled", "0.2", "0.3", __name__,
                        "SQLStorage._connection_pool, SQLAdapter.from_catalog and order_by_args, "
                        "Context.__init__ setting http_client")
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


# -- a client context with a transport of ours -------------------------------------------
def context_with_transport(uri: str, transport: httpx.BaseTransport, *, headers: dict[str, str]) -> Context:
    """A Tiled client context of the server at ``uri`` whose every request, from the
    first (``Context.__init__`` already asks the server), goes through ``transport``
    (inside Tiled's own transport, whose responses decode msgpack), without TLS.

    Parameters
    ----------
    uri : str
        The server's API root (``http://host/api/v1``); never resolved if ``transport``
        does not resolve it.
    transport : httpx.BaseTransport
        What sends the requests.
    headers : dict
        Headers of every request.
    """
    wrapped = Transport(transport=transport)

    class ContextWithTransport(Context):
        """Tiled's context, its HTTP client replaced as it is set."""

        @property
        def http_client(self) -> httpx.Client:
            return self.__dict__["http_client"]

        @http_client.setter
        def http_client(self, client: httpx.Client) -> None:
            client.close()
            self.__dict__["http_client"] = httpx.Client(transport=wrapped, headers=client.headers,
                                                        follow_redirects=True, timeout=client.timeout)

    return ContextWithTransport(uri, headers=headers, verify=False)
