"""A served Tiled catalog (``xrd-bluesky serve``) over the same data directory the
embedded catalog uses, so a directory written by a workstation session can be served
as it is.

Layout of the data directory ``D`` (as :class:`tiled.server.SimpleTiledServer` lays
it out, which the embedded catalog uses): ``D/tiled/catalog.db`` (SQLite) unless a
``--database`` URI is given, arrays in ``D/tiled/data``, tables in
``D/tiled/storage.duckdb``, and the detectors' frame files in ``D/frames`` (readable).
The API key comes from ``TILED_API_KEY`` only; without it the server does not start.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingMetadataError
from .catalog import _register_document_exporter

API_KEY_VARIABLE = "TILED_API_KEY"


def api_key_from_environment() -> str:
    """The server's API key, from ``TILED_API_KEY`` (never from files or arguments)."""
    key = os.environ.get(API_KEY_VARIABLE, "")
    if not key:
        raise MissingMetadataError(f"set {API_KEY_VARIABLE} to the API key the server must require; "
                                   "a served catalog never runs without one")
    return key


def build_app(directory: str | Path, *, database: str | None = None, api_key: str):
    """The Tiled ASGI app serving ``raw`` and ``processed`` from ``directory``.

    Parameters
    ----------
    directory : path
        The data directory (see the module docstring).
    database : str, optional
        SQLAlchemy URI of the catalog database (default: SQLite in the directory).
    api_key : str
        The single API key every request must present.
    """
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.config import Authentication, StreamingCacheConfig
    from tiled.server.app import build_app as tiled_app

    _register_document_exporter()
    storage = Path(directory).resolve() / "tiled"
    (storage / "data").mkdir(parents=True, exist_ok=True)
    frames = Path(directory).resolve() / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    tree = catalog_from_uri(database or str(storage / "catalog.db"),
                            writable_storage=[storage / "data", f"duckdb:///{storage / 'storage.duckdb'}"],
                            readable_storage=[frames], init_if_not_exists=True,
                            cache_config=StreamingCacheConfig(uri="memory").model_dump())
    return tiled_app(tree, authentication=Authentication(single_user_api_key=api_key))


def serve(directory: str | Path, *, database: str | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the catalog in ``directory`` until interrupted (API key from the environment)."""
    import uvicorn

    uvicorn.run(build_app(directory, database=database, api_key=api_key_from_environment()),
                host=host, port=port, log_level="warning")


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
        Catalog database URI (default: SQLite in the directory).
    startup_timeout_s : float
        Longest wait (s) for the server to answer.
    """

    def __init__(self, directory: str | Path, api_key: str, *, database: str | None = None,
                 startup_timeout_s: float = 60.0):
        import socket
        import subprocess
        import sys
        import time

        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        command = [sys.executable, "-m", "xrd_bluesky.cli", "serve", "--directory", str(directory),
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
        self.kill()
        raise RuntimeError(f"`{' '.join(command)}` did not answer within {startup_timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the server (as a crash would) and reap it."""
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
