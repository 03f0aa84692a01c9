"""A served Tiled catalog (``xrd-bluesky serve``) over the same data directory the
embedded catalog uses, so a directory written by a workstation session can be served
as it is.

Layout of the data directory ``D`` (as :class:`tiled.server.SimpleTiledServer` lays
it out, which the embedded catalog uses): the catalog in ``D/tiled/catalog.db``
(SQLite) and tables (the runs' event streams) in ``D/tiled/storage.duckdb``, arrays in
``D/tiled/data``, and the detectors' frame files in ``D/frames`` (readable). With
``--database postgresql://user@host:port/db`` the catalog and the tables both live in
that PostgreSQL database (see :mod:`.postgres`); arrays and frames stay in ``D``, so a
second server on the same database must serve the same directory (or a shared copy
of it at the same path). The API key comes from ``TILED_API_KEY`` only; without it the
server does not start. Besides Tiled's API the server offers the bulk write endpoint
of :mod:`.bulk_write` (a derived run written in one request).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from ..errors import CredentialsError, UsageError
from .bulk_write import bulk_write_router
from .catalog import directory_storage, register_document_exporter
from .postgres import (
    PostgresError,
    check_database,
    is_postgres_uri,
    redact,
    tiled_adapters,
    tiled_uris,
)
from .table_store import serialize_table_store

API_KEY_VARIABLE = "TILED_API_KEY"


def api_key_from_environment() -> str:
    """The server's API key, from ``TILED_API_KEY`` (never from files or arguments).

    Raises
    ------
    CredentialsError
        ``TILED_API_KEY`` is not set (or empty).
    """
    key = os.environ.get(API_KEY_VARIABLE, "")
    if not key:
        raise CredentialsError(f"set {API_KEY_VARIABLE} to the API key the server must require; "
                               "a served catalog never runs without one")
    return key


def storage_of(directory: str | Path, database: str | None = None) -> tuple[str, list[str]]:
    """Where the server of ``directory`` keeps its catalog and writes its data.

    Parameters
    ----------
    directory : path
        The data directory (see the module docstring).
    database : str, optional
        The catalog database: a PostgreSQL URI puts the catalog and the tables there;
        any other SQLAlchemy URI or path holds the catalog only (default: SQLite in
        the directory), the tables staying in DuckDB in the directory.

    Returns
    -------
    catalog : str
        The catalog database, as Tiled's ``from_uri`` takes it.
    writable : list of str
        Tiled's writable storage: the array directory, then the table storage URI.
    """
    catalog, (arrays, tables) = directory_storage(directory)
    if is_postgres_uri(database):
        uris = tiled_uris(database)
        return uris.catalog, [arrays, uris.tables]
    return database or catalog, [arrays, tables]


def build_app(directory: str | Path, *, database: str | None = None, api_key: str):
    """The Tiled ASGI app serving ``raw`` and ``processed`` from ``directory``.

    Parameters
    ----------
    directory : path
        The data directory (see the module docstring).
    database : str, optional
        SQLAlchemy URI of the catalog database (default: SQLite in the directory); a
        PostgreSQL one (``postgresql://user@host:port/db``) holds the tables too.
    api_key : str
        The single API key every request must present.

    Raises
    ------
    CatalogUnavailableError
        The PostgreSQL database cannot be reached (named in the message).
    PostgresError
        Tiled cannot set its catalog up in the PostgreSQL database.
    """
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.catalog.adapter import DatabaseInitializationError
    from tiled.config import Authentication, StreamingCacheConfig
    from tiled.server.app import build_app as tiled_app

    register_document_exporter()
    catalog, writable = storage_of(directory, database)
    Path(writable[0]).mkdir(parents=True, exist_ok=True)
    frames = Path(directory).resolve() / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    adapters = None
    if is_postgres_uri(database):
        check_database(database)
        adapters = tiled_adapters()
    try:
        tree = catalog_from_uri(catalog, writable_storage=writable, readable_storage=[frames],
                                init_if_not_exists=True, adapters_by_mimetype=adapters,
                                cache_config=StreamingCacheConfig(uri="memory").model_dump())
    except DatabaseInitializationError as exc:
        if not is_postgres_uri(database):
            raise
        raise PostgresError(f"cannot set up the Tiled catalog in {redact(database)}: "
                            f"{_final_error(str(exc))}") from None
    if not is_postgres_uri(database):
        serialize_table_store(writable[1])
    return tiled_app(tree, authentication=Authentication(single_user_api_key=api_key),
                     include_routers=[bulk_write_router(tree)])


def _final_error(output: str) -> str:
    """The error message at the end of a Python traceback (plain or boxed by rich), on
    one line, without SQLAlchemy's links."""
    lines = output.strip().splitlines()
    ends = [i for i, line in enumerate(lines) if line.startswith(("╰", "Traceback", "  File", "    "))]
    tail = lines[ends[-1] + 1:] if ends else lines[-1:]
    return " ".join(line.strip() for line in tail if line.strip() and not line.startswith("(Background")) or "no output"


def serve(directory: str | Path, *, database: str | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the catalog in ``directory`` on ``host:port`` until interrupted (API key
    from the environment).

    Raises
    ------
    CredentialsError
        ``TILED_API_KEY`` is not set.
    UsageError
        ``port`` is not a TCP port, ``host`` is not an address of this machine, or the
        port is taken (see :func:`listening_socket`); checked before the catalog is
        opened.
    """
    import uvicorn

    api_key = api_key_from_environment()
    sock = listening_socket(host, port)
    try:
        app = build_app(directory, database=database, api_key=api_key)
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, which the server then listens on: so it
    serves there or nowhere.

    Parameters
    ----------
    host : str
        An address (or a host name) of this machine.
    port : int
        A TCP port, 1 to 65535.

    Raises
    ------
    UsageError
        ``port`` is not an integer from 1 to 65535, ``host`` cannot be resolved or is
        not an address of this machine, or the port is taken or needs privileges: the
        host and the port are named.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"--port {port!r} is not a TCP port (an integer from 1 to 65535)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"--host {host!r} is neither an IP address nor a known host name ({exc})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closed server's port is free
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot serve on {host}:{port}: {_bind_failure(exc)}") from None
    return sock


def _bind_failure(exc: OSError) -> str:
    """Why a port could not be bound, in the user's terms."""
    reasons = {errno.EADDRINUSE: "the port is taken (another server listens there): choose another --port",
               errno.EADDRNOTAVAIL: "the host is not an address of this machine: choose another --host",
               errno.EACCES: "ports below 1024 need privileges: choose another --port"}
    return reasons.get(exc.errno, str(exc))
