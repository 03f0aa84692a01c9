"""PostgreSQL for a served catalog (``xrd-bluesky serve --database postgresql://...``)
and a throw-away PostgreSQL cluster for tests and benchmarks.

Tiled keeps two things in SQL: its catalog (nodes, metadata, data sources; SQLAlchemy
over ``asyncpg``) and the rows of tables, the event streams of the runs (through ADBC,
``adbc_driver_postgresql``). Both go to the one database the user names: Tiled's data
tables are ``table_<md5 of their Arrow schema>`` plus a sequence
``_dataset_id_counter``, beside the catalog's fixed table names (``nodes``,
``data_sources``, ``assets``...), so nothing collides; the catalog database is not one
of Tiled's registered storages (those are keyed by database name only), so sharing it
is no ambiguity either; and one database means one backup, one set of credentials and
no CREATEDB privilege. The user's role needs CREATE on the database's ``public``
schema (the owner has it) and, on a database new to Tiled, may create the trusted
extension ``btree_gin``.

:func:`tiled_uris` turns the user's URI (``postgresql://user@host:port/db``, or with
``postgres://`` or an explicit SQLAlchemy driver such as ``postgresql+asyncpg://``)
into the two URIs Tiled wants; :func:`check_database` fails early, naming the database,
when it cannot be reached; :func:`tiled_adapters` reads event tables in event order
(see :class:`EventOrderedSQLAdapter`).
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tiled.adapters.sql import SQLAdapter
from tiled.mimetypes import TILED_SQL_TABLE_MIMETYPE

from ..errors import XRDBlueskyError
from .catalog import CatalogUnavailableError

logger = logging.getLogger(__name__)

#: Environment variable naming a directory with PostgreSQL's ``initdb`` and ``pg_ctl``
#: (default: Debian's ``/usr/lib/postgresql/<version>/bin``, newest first, then PATH).
BIN_VARIABLE = "XRD_BLUESKY_POSTGRES_BIN"
#: Where Debian's ``postgresql`` package puts the server binaries, one folder per version.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: The superuser of a :class:`TemporaryPostgres` cluster, and the system user that runs
#: it when this process is root (``initdb`` refuses root).
SUPERUSER = "postgres"
#: How long (s) :func:`check_database` waits for a connection.
CONNECT_TIMEOUT_S = 10
_SCHEMES = ("postgres", "postgresql")


class PostgresError(XRDBlueskyError, RuntimeError):
    """A PostgreSQL cluster could not be set up, started or stopped."""


class PostgresNotInstalledError(PostgresError, FileNotFoundError):
    """PostgreSQL's server programs (or the system user that must run them) are missing."""


# -- the user's URI, as Tiled wants it ------------------------------------------------
def is_postgres_uri(uri: str | None) -> bool:
    """Whether ``uri`` names a PostgreSQL database (``postgres(ql)[+driver]://...``)."""
    if not uri or "://" not in uri:
        return False
    return uri.split("://", 1)[0].split("+", 1)[0].lower() in _SCHEMES


@dataclass(frozen=True)
class TiledURIs:
    """Where Tiled keeps a served catalog in PostgreSQL.

    Attributes
    ----------
    catalog : str
        SQLAlchemy URI of the catalog database (``postgresql+asyncpg://...`` unless the
        user named another async driver).
    tables : str
        ``postgresql://...`` URI of the same database for Tiled's tabular storage
        (ADBC, libpq syntax): where the event streams' rows go.
    """

    catalog: str
    tables: str


def tiled_uris(uri: str) -> TiledURIs:
    """The catalog and table-storage URIs of the PostgreSQL database ``uri``.

    Parameters
    ----------
    uri : str
        ``postgresql://[user[:password]@]host[:port]/database[?params]``; the scheme
        may also be ``postgres`` or carry a SQLAlchemy driver (``postgresql+asyncpg``).
        Credentials stay in memory: Tiled stores table locations without them. Query
        parameters go to both drivers as they are (libpq's ``sslmode`` is renamed
        ``ssl`` for asyncpg), so use those both understand (``host``, ``sslmode``).

    Raises
    ------
    CatalogUnavailableError
        ``uri`` is not a PostgreSQL URI or names no database.
    """
    if not is_postgres_uri(uri):
        raise CatalogUnavailableError(f"{redact(uri)} is not a PostgreSQL URI (postgresql://user@host:port/database)")
    parts = urlsplit(uri)
    driver = parts.scheme.partition("+")[2]
    database = parts.path.lstrip("/") or dict(parse_qsl(parts.query)).get("dbname", "")
    if not database:
        raise CatalogUnavailableError(f"{redact(uri)} names no database (postgresql://user@host:port/database)")
    catalog = parts._replace(scheme=f"postgresql+{driver or 'asyncpg'}")
    if not driver or driver == "asyncpg":  # asyncpg names libpq's sslmode ssl (same values)
        catalog = catalog._replace(query=urlencode([("ssl" if k == "sslmode" else k, v)
                                                    for k, v in parse_qsl(parts.query)], safe="/"))
    return TiledURIs(catalog=urlunsplit(catalog), tables=urlunsplit(parts._replace(scheme="postgresql")))


def redact(uri: str) -> str:
    """``uri`` without its password (for messages and logs); anything else unchanged."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
    except ValueError:  # not a URI
        return uri
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_database(uri: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Connect once to the PostgreSQL database ``uri`` as Tiled's table storage will.

    Raises
    ------
    CatalogUnavailableError
        The server does not answer within ``timeout_s`` (s), refuses the credentials,
        or has no such database; the message names the database (never the password)
        and the server's reason.
    """
    import adbc_driver_postgresql.dbapi

    tables = tiled_uris(uri).tables
    parts = urlsplit(tables)
    query = dict(parse_qsl(parts.query))
    query.setdefault("connect_timeout", str(max(1, round(timeout_s))))
    try:
        with adbc_driver_postgresql.dbapi.connect(urlunsplit(parts._replace(query=urlencode(query, safe="/")))) as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchall()
    except Exception as exc:  # the driver's errors carry libpq's message
        reason = str(exc).replace(parts.password or "\0", "***").strip().splitlines()
        raise CatalogUnavailableError(f"cannot use PostgreSQL database {redact(tables)} for the catalog: "
                                      f"{' '.join(line.strip() for line in reason)}") from None


# -- reading tables back in event order -------------------------------------------------
class EventOrderedSQLAdapter(SQLAdapter):
    """Tiled's SQL table adapter, reading a Bluesky event table in ``seq_num`` order on
    PostgreSQL, through an index of its own.

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
                        cursor.execute(f'CREATE INDEX IF NOT EXISTS "{table}_events" ON "{table}" (_dataset_id, seq_num)')
                    conn.commit()
            except Exception as exc:  # reads work without it, only slower; the next server retries
                logger.warning("could not index table %s by run and seq_num: %s", table, exc)
            cls._indexed.add(table)


def tiled_adapters() -> dict:
    """Tiled's ``adapters_by_mimetype`` for a catalog whose tables are in PostgreSQL
    (:class:`EventOrderedSQLAdapter` for SQL tables)."""
    return {TILED_SQL_TABLE_MIMETYPE: EventOrderedSQLAdapter}


# -- a throw-away cluster --------------------------------------------------------------
def _version_key(folder: Path) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in folder.parent.name.split("."))
    except ValueError:
        return (-1,)


def postgres_bin_dir() -> Path:
    """The folder with PostgreSQL's ``initdb``, ``pg_ctl`` and ``createdb``.

    Looked for in ``$XRD_BLUESKY_POSTGRES_BIN``, then Debian's
    ``/usr/lib/postgresql/<version>/bin`` (newest version first), then on ``PATH``.

    Raises
    ------
    PostgresNotInstalledError
        None of them has the programs.
    """
    candidates = [Path(os.environ[BIN_VARIABLE])] if os.environ.get(BIN_VARIABLE) else []
    candidates += sorted(DEBIAN_ROOT.glob("*/bin"), key=_version_key, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "createdb")):
            return folder
    raise PostgresNotInstalledError(
        f"PostgreSQL's server programs (initdb, pg_ctl, createdb) are not in ${BIN_VARIABLE}, "
        f"{DEBIAN_ROOT}/<version>/bin or on PATH: install them (Debian: apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryPostgres:
    """A throw-away PostgreSQL cluster on a free loopback port: a context manager.

    On entry, ``initdb`` makes a cluster in a new temporary directory (as the
    ``postgres`` system user when this process is root), ``pg_ctl`` starts it listening
    on 127.0.0.1 only (its Unix socket inside the directory; fsync off: nothing in it
    is meant to survive) and the databases are created. On exit the server is stopped
    (``pg_ctl stop -m immediate``) and the directory removed. Anyone on this machine
    can connect as the superuser without a password while it runs: for tests and
    benchmarks only.

    Parameters
    ----------
    databases : sequence of str
        Databases to create; :attr:`uri` names the first.
    parent : path, optional
        Where the temporary directory goes (default: the system's temporary
        directory); the ``postgres`` user must be able to reach it when run as root.
    startup_timeout_s : float
        Longest wait (s) for the server to accept connections.

    Attributes
    ----------
    port : int
        The TCP port (on 127.0.0.1); 0 until started.
    directory : Path or None
        The cluster's temporary directory while it exists.
    """

    def __init__(self, databases: Sequence[str] = ("xrd",), *, parent: str | Path | None = None,
                 startup_timeout_s: float = 60.0):
        if not databases:
            raise ValueError("TemporaryPostgres needs at least one database to create")
        self.databases = tuple(databases)
        self.parent = parent
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.directory: Path | None = None
        self._bin: Path | None = None
        self._running = False

    @property
    def uri(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<first database>``."""
        return self.uri_of(self.databases[0])

    def uri_of(self, database: str) -> str:
        """The URI of ``database`` in this cluster."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> "TemporaryPostgres":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Create the cluster, start it and create the databases (see the class).

        Raises
        ------
        PostgresNotInstalledError
            The server programs, or (as root) the ``postgres`` system user, are missing.
        PostgresError
            ``initdb``, ``pg_ctl`` or ``createdb`` failed (the message has their output).
        """
        self._bin = postgres_bin_dir()
        owner = self._owner()
        self.directory = Path(tempfile.mkdtemp(prefix="xrd-postgres-", dir=self.parent))
        atexit.register(self.stop)
        try:
            if owner:
                os.chown(self.directory, owner["user"], owner["group"])
            self._run(["initdb", "-D", str(self._data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale",
                       "-N"], owner)
            for attempt in range(3):  # another process may take the free port first
                self.port = _free_port()
                if self._start_server(owner, last=attempt == 2):
                    break
            for database in self.databases:
                self._run(["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, database], {})
        except BaseException:
            self.stop()
            raise
        logger.info("temporary PostgreSQL cluster in %s at %s", self.directory, self.uri)

    def stop(self) -> None:
        """Stop the server (immediately) and remove its directory; safe to repeat."""
        atexit.unregister(self.stop)
        if self.directory is None:
            return
        if self._running:
            try:
                self._run(["pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop"], self._owner(), timeout=30)
            except PostgresError:
                self._kill_postmaster()
            self._running = False
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    # -- internals ---------------------------------------------------------------------
    @property
    def _data(self) -> Path:
        return self.directory / "data"

    def _start_server(self, owner: dict, *, last: bool) -> bool:
        options = shlex.join(["-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                              "-c", f"unix_socket_directories={self.directory}", "-c", "fsync=off",
                              "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        log = self.directory / "postgres.log"
        try:
            self._run(["pg_ctl", "-D", str(self._data), "-l", str(log), "-w", "-t",
                       str(max(1, round(self.startup_timeout_s))), "-o", options, "start"], owner,
                      timeout=self.startup_timeout_s + 10)
        except PostgresError as exc:
            self._kill_postmaster()
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            if last or "could not bind" not in tail:
                raise PostgresError(f"{exc}\nserver log {log}:\n{tail}") from None
            return False
        self._running = True
        return True

    def _kill_postmaster(self) -> None:
        """SIGKILL this cluster's postmaster (named by its pid file), if it runs."""
        pid_file = self._data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    @staticmethod
    def _owner() -> dict:
        """``subprocess`` arguments that run the server programs as ``postgres`` when
        this process is root (initdb refuses root), else nothing."""
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            entry = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PostgresNotInstalledError(
                f"running as root, the PostgreSQL server must run as the system user {SUPERUSER!r}, which does not "
                "exist (Debian's postgresql package creates it)") from None
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, command: list[str], owner: dict, *, timeout: float = 120.0) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        argv = [str(self._bin / command[0]), *command[1:]]
        try:
            done = subprocess.run(argv, cwd=self.directory, env=env, capture_output=True, text=True,
                                  timeout=timeout, **owner)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresError(f"`{shlex.join(argv)}` failed: {exc}") from None
        if done.returncode != 0:
            raise PostgresError(f"`{shlex.join(argv)}` exited with {done.returncode}: "
                                f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done.stdout
