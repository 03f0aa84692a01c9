"""One request at a time on a DuckDB table store (the embedded catalog's and
``xrd-bluesky serve``'s default).

Tiled keeps one DuckDB connection per table store and hands it to every request
thread at once (an SQLAlchemy ``StaticPool``). A DuckDB connection must not be used
by two threads at once: a read of a run's events while another run is appended fails
("No active transaction"), duplicates rows (101 rows for 100 events) or crashes the
process (a segfault, seen with ``xrd-bluesky replay --workers 2``). So every use of
the connection here takes one lock, from ``connect()`` to ``close()``. Table reads and
appends are short, so requests wait milliseconds for each other. PostgreSQL has a
real pool and is left alone. The pool is Tiled's private attribute, reached through
:mod:`xrd_bluesky.compat.tiled`.
"""

from __future__ import annotations

import threading

from tiled.storage import get_storage
from tiled.utils import ensure_uri

from ..compat.tiled import connection_pool, replace_connection_pool


class _SerializedConnection:
    """The pool's connection, holding ``lock`` until closed."""

    def __init__(self, connection, lock: threading.RLock):
        self._connection = connection
        self._lock = lock
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._connection.close()
            finally:
                self._lock.release()

    def __enter__(self) -> _SerializedConnection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getattr__(self, name: str):
        return getattr(self._connection, name)


class _SerializedPool:
    """A connection pool whose connections are used by one thread at a time."""

    def __init__(self, pool):
        self._pool = pool
        self._lock = threading.RLock()  # re-entrant: a request may open a second cursor on its thread

    def connect(self) -> _SerializedConnection:
        self._lock.acquire()
        try:
            return _SerializedConnection(self._pool.connect(), self._lock)
        except BaseException:
            self._lock.release()
            raise

    def dispose(self) -> None:
        self._pool.dispose()


def serialize_table_store(uri: str) -> None:
    """Make the server's table store ``uri`` (registered with Tiled when the catalog
    was built) take one connection user at a time, if it is DuckDB."""
    storage = get_storage(ensure_uri(uri))
    if storage.dialect == "duckdb" and not isinstance(connection_pool(storage), _SerializedPool):
        replace_connection_pool(storage, _SerializedPool(connection_pool(storage)))
