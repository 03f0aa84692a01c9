"""Test and benchmark scaffolding: a throw-away PostgreSQL cluster
(:class:`TemporaryPostgres`) and ``xrd-bluesky serve`` in a child process
(:class:`ServerProcess`). Not part of the runtime package, which never imports it."""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from xrd_bluesky.store.postgres import PostgresError, redact
from xrd_bluesky.store.server import API_KEY_VARIABLE

logger = logging.getLogger(__name__)

#: Environment variable naming a directory with PostgreSQL's ``initdb`` and ``pg_ctl``
#: (default: Debian's ``/usr/lib/postgresql/<version>/bin``, newest first, then PATH).
BIN_VARIABLE = "XRD_BLUESKY_POSTGRES_BIN"
#: Where Debian's ``postgresql`` package puts the server binaries, one folder per version.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: The superuser of a :class:`TemporaryPostgres` cluster, and the system user that runs
#: it when this process is root (``initdb`` refuses root).
SUPERUSER = "postgres"


class PostgresNotInstalledError(PostgresError, FileNotFoundError):
    """PostgreSQL's server programs (or the system user that must run them) are missing."""


# -- a throw-away PostgreSQL cluster ---------------------------------------------------
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
    def __enter__(self) -> TemporaryPostgres:
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


# -- a served catalog in a child process -----------------------------------------------
class ServerProcess:
    """``xrd-bluesky serve`` in a child process on a free loopback port (tests,
    benchmarks, a quick served catalog); a context manager that kills it on exit.

    Parameters
    ----------
    directory : path
        The data directory to serve.
    api_key : str
        Passed to the child as ``TILED_API_KEY``.
    database : str, optional
        Catalog database URI (default: SQLite in the directory); a PostgreSQL one
        holds the tables too (see :func:`build_app`).
    startup_timeout_s : float
        Longest wait (s) for the server to answer.
    """

    def __init__(self, directory: str | Path, api_key: str, *, database: str | None = None,
                 startup_timeout_s: float = 60.0):
        self.port = _free_port()
        command = [sys.executable, "-m", "xrd_bluesky.cli.main", "serve", "--directory", str(directory),
                   "--port", str(self.port)] + (["--database", database] if database else [])
        self.process = subprocess.Popen(command, env={**os.environ, API_KEY_VARIABLE: api_key})
        self.uri = f"http://127.0.0.1:{self.port}/api/v1"
        deadline = time.monotonic() + startup_timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        exited = self.process.poll()
        self.kill()
        shown = " ".join(redact(part) for part in command)
        raise RuntimeError(f"`{shown}` exited with {exited} (its error is above)" if exited is not None
                           else f"`{shown}` did not answer within {startup_timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the server (as a crash would) and reap it."""
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
