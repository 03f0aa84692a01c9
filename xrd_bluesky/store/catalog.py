"""Open the Tiled catalog of Bluesky runs: ``raw`` for what the RunEngine wrote,
``processed`` for derived runs.

By default an in-process Tiled server (:class:`tiled.server.SimpleTiledServer`)
persists everything in the data directory (``XRD_BLUESKY_DATA``, default under the
user's data directory): its SQLite catalog, DuckDB tables, arrays, and the frames
the detectors write (``<data dir>/frames``), which the server may read. A remote
Tiled is opened by URI with the API key from ``TILED_API_KEY`` only. Either way,
documents not yet in the catalog wait in ``<data dir>/spool`` (see :mod:`.writer`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from tiled.client import from_uri
from tiled.client.container import Container
from tiled.media_type_registration import default_serialization_registry
from tiled.structures.core import Spec

from ..errors import XRDBlueskyError
from .table_store import serialize_table_store

logger = logging.getLogger(__name__)

#: The containers every catalog has.
CONTAINERS = ("raw", "processed")
_RUN_CATALOG_SPEC = Spec("CatalogOfBlueskyRuns", version="3.0")


class CatalogUnavailableError(XRDBlueskyError, ConnectionError):
    """The catalog's server does not answer."""


def answers(client: Container, timeout_s: float = 1.0) -> bool:
    """Whether the server of ``client`` answers one request within ``timeout_s`` (s),
    without the client's retries (which take tens of seconds on a dead server)."""
    try:
        return client.context.http_client.get(client.uri, timeout=timeout_s).status_code < 500
    except Exception:  # any transport failure means: no answer
        return False


def data_directory() -> Path:
    """The data directory: ``$XRD_BLUESKY_DATA`` or the user's data directory."""
    env = os.environ.get("XRD_BLUESKY_DATA")
    return Path(env).expanduser().resolve() if env else Path(platformdirs.user_data_dir("xrd-bluesky"))


@dataclass
class Catalog:
    """A Tiled catalog of Bluesky runs with ``raw`` and ``processed`` containers.

    ``raw`` and ``processed`` are bluesky-tiled-plugins ``CatalogOfBlueskyRuns``:
    ``catalog.raw[uid]``, ``catalog.raw[-1]``, ``catalog.raw[scan_id]`` and
    ``catalog.raw.search(...)`` work as in databroker.
    """

    client: Container
    frames_dir: Path | None
    uri: str
    spool_dir: Path
    _server: object | None = None
    #: Held by every writer of this catalog around each upload, so the raw and
    #: processed writers take turns: a Tiled server on DuckDB that is not ours (ours
    #: serialize table access, see :mod:`.table_store`) fails under concurrent appends.
    upload_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def raw(self):
        return self.client["raw"]

    @property
    def processed(self):
        return self.client["processed"]

    def online(self) -> "Catalog":
        """This catalog, after checking that its server answers.

        Raises
        ------
        CatalogUnavailableError
            The server does not answer within a second.
        """
        if not answers(self.client):
            raise CatalogUnavailableError(f"the catalog at {self.uri.split('?')[0]} does not answer; runs recorded "
                                          "meanwhile stay in the spool (`xrd-bluesky sync` when it is back)")
        return self

    def close(self) -> None:
        """Stop the embedded server, if this catalog runs one."""
        if self._server is not None:
            self._server.close()
            self._server = None


_registered = False


def _register_document_exporter() -> None:
    """Let the server export runs as Bluesky documents (``run.documents()``, replay).

    Must happen before the server's app is built.
    """
    global _registered
    if not _registered:
        from bluesky_tiled_plugins.exporters import json_seq_exporter

        default_serialization_registry.register("BlueskyRun", "application/json-seq", json_seq_exporter)
        _registered = True


def _ensure_containers(client: Container) -> None:
    from tiled.client.utils import ClientError

    for name in CONTAINERS:
        if name not in client:
            try:
                client.create_container(name, specs=[_RUN_CATALOG_SPEC])
            except ClientError as exc:  # 409: another client (a worker, a session) made it meanwhile
                if exc.response.status_code != 409:
                    raise


def open_catalog(uri: str | None = None, *, directory: str | Path | None = None,
                 storage_roots: Sequence[str | Path] = ()) -> Catalog:
    """Open the embedded catalog (``uri=None``) or a remote Tiled server.

    Parameters
    ----------
    uri : str, optional
        ``http(s)://host:port[/api/v1]`` of a Tiled server; its API key is read from
        the ``TILED_API_KEY`` environment variable (never from the URI or a file).
    directory : path, optional
        Data directory (default :func:`data_directory`): the embedded server's storage
        and, for either kind, the spool (``<directory>/spool``).
    storage_roots : sequence of path
        Directories, besides ``<directory>/frames``, whose frame files the embedded
        server serves (a beamline description's storage roots).
    """
    directory = Path(directory) if directory is not None else data_directory()
    if uri is not None:
        client = from_uri(uri, api_key=os.environ.get("TILED_API_KEY"))
        _ensure_containers(client)
        return Catalog(client, None, uri, directory / "spool")

    from tiled.server import SimpleTiledServer

    from .server import storage_of  # it imports this module

    _register_document_exporter()
    frames = directory / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    server = SimpleTiledServer(directory / "tiled", readable_storage=[frames, *(Path(r) for r in storage_roots)])
    try:
        _, (_, tables) = storage_of(directory)  # the layout SimpleTiledServer uses
        serialize_table_store(tables)
        client = from_uri(server.uri)
        _ensure_containers(client)
    except BaseException:
        server.close()  # its thread would keep the process alive
        raise
    logger.info("embedded Tiled catalog in %s at %s", directory, server.web_ui_link)
    catalog = Catalog(client, frames, server.uri, directory / "spool", server)
    # The server's thread is not a daemon: Python joins it before atexit handlers run,
    # so callers must close() the catalog; this handler covers interpreter teardown paths
    # where the thread has already been asked to stop.
    atexit.register(catalog.close)
    return catalog
