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
import secrets
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import platformdirs
from tiled.client import from_uri
from tiled.client.container import Container
from tiled.media_type_registration import default_serialization_registry
from tiled.structures.core import Spec

from ..errors import MissingMetadataError, UsageError, XRDBlueskyError
from ..schema.documents import check_uid
from ..timeouts import call_with_timeout
from .table_store import serialize_table_store

logger = logging.getLogger(__name__)

#: The containers every catalog has.
CONTAINERS = ("raw", "processed")
_RUN_CATALOG_SPEC = Spec("CatalogOfBlueskyRuns", version="3.0")
#: Longest wait (s) for a remote catalog's server to answer when it is opened (name
#: lookup, connection and reply), without the Tiled client's retries.
OPEN_TIMEOUT_S = 4.0


class CatalogUnavailableError(XRDBlueskyError, ConnectionError):
    """The catalog's server does not answer."""


def answers(client: Container, timeout_s: float = 1.0) -> bool:
    """Whether the server of ``client`` answers one request within ``timeout_s`` (s),
    without the client's retries (which take tens of seconds on a dead server)."""
    try:
        return client.context.http_client.get(client.uri, timeout=timeout_s).status_code < 500
    except Exception:  # any transport failure means: no answer
        return False


def find_run(container, uid: str, what: str):
    """Run ``uid`` of ``container`` (``catalog.raw`` or ``catalog.processed``), given
    whole or, as a user may type it, by its unique first characters (at least 5); None
    if there is no such run.

    Raises
    ------
    UnsafeUidError
        ``uid`` is not a run uid (see :func:`~xrd_bluesky.schema.documents.check_uid`).
    MissingMetadataError
        ``uid`` is too short to look a run up by, begins the uids of several runs, or
        found a run whose uid does not begin with it: ``what`` and ``uid`` are named.
    """
    check_uid(uid, what)
    try:
        run = container[uid]
    except KeyError:
        return None
    except ValueError as exc:  # bluesky-tiled-plugins: a partial uid too short, or matching several runs
        raise MissingMetadataError(f"{what} {uid!r} names no single run: {exc}") from None
    found = run.start.get("uid")
    if not isinstance(found, str) or not found.startswith(uid):
        raise MissingMetadataError(f"{what} {uid!r} found run {found!r}, whose uid does not begin with it")
    return run


def stored_run(container, uid: str):
    """The run stored under key ``uid`` (a checked uid) in ``container``, or None: never
    a run whose uid merely begins with ``uid``, as ``container[uid]`` may return."""
    try:
        return Container.__getitem__(container, uid)
    except KeyError:
        return None


def open_runs(uri: str, container: str | None = None):
    """The node of a Tiled server that holds Bluesky runs (its root, or the container at
    the slash-separated path ``container``), opened to be read only: unlike
    :func:`open_catalog`, nothing is created on the server. The API key comes from the
    ``TILED_API_KEY`` environment variable.

    Raises
    ------
    UsageError
        ``uri`` is not ``http(s)://host[:port]...``.
    CatalogUnavailableError
        The server does not answer within :data:`OPEN_TIMEOUT_S`.
    MissingMetadataError
        ``container`` is not a container of the server.
    """
    _wait_for_answer(_checked_uri(uri))
    node = from_uri(uri, api_key=_api_key(uri))
    path = [part for part in (container or "").split("/") if part]
    for depth, part in enumerate(path):
        try:
            node = node[part]
        except KeyError:
            raise MissingMetadataError(f"the catalog at {_checked_uri(uri)} has no container "
                                       f"{'/'.join(path[:depth + 1])!r}") from None
        if not isinstance(node, Container):
            raise MissingMetadataError(f"{'/'.join(path[:depth + 1])!r} of the catalog at {_checked_uri(uri)} "
                                       "is not a container")
    return node


def _api_key(uri: str) -> str | None:
    """The API key to open ``uri`` with: ``TILED_API_KEY``, unless the URI carries one
    (an embedded server's URI, as worker processes and ``--into`` receive it)."""
    return None if "api_key=" in uri else os.environ.get("TILED_API_KEY")


def holds_catalog(node) -> bool:
    """Whether a Tiled node is this package's catalog (``raw`` and ``processed``)."""
    return all(name in node for name in CONTAINERS)


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

    _containers: dict = field(default_factory=dict, repr=False)

    @property
    def raw(self):
        """The ``raw`` container (its client fetched once; a new one each time, so that
        lengths and contents are the server's now)."""
        return self._container("raw")

    @property
    def processed(self):
        """The ``processed`` container (as :attr:`raw`)."""
        return self._container("processed")

    def _container(self, key: str):
        """A fresh client of the container ``key``, from the one fetched the first time."""
        if key not in self._containers:
            self._containers[key] = self.client[key]
        return self._containers[key].new_variation()

    def online(self) -> Catalog:
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


def register_document_exporter() -> None:
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


def _checked_uri(uri: str) -> str:
    """``uri`` without its query (which may hold an API key), after checking that it is
    ``http(s)://host[:port]...``; UsageError naming it if not."""
    shown = str(uri).split("?")[0].split("#")[0]
    try:
        parts = urllib.parse.urlsplit(shown)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number from 0 to 65535, a malformed IPv6 address
        valid = False
    if not valid:
        raise UsageError(f"catalog URI {shown!r} is not http(s)://host[:port][/api/v1]")
    return shown


def _wait_for_answer(uri: str, timeout_s: float = OPEN_TIMEOUT_S) -> None:
    """Return once the server at ``uri`` answers one request (any HTTP status), within
    ``timeout_s`` (s) in all, name lookup included, and without retries.

    Raises
    ------
    CatalogUnavailableError
        Connection refused, unknown host, no answer in time...: the URI and the reason
        are named.
    """
    try:  # in a thread: the name lookup has no timeout
        call_with_timeout(lambda: httpx.get(uri, timeout=timeout_s), timeout_s, "catalog-probe")
        return
    except TimeoutError:
        reason = f"no answer within {timeout_s:g} s"
    except Exception as exc:  # any transport failure means: no answer
        reason = f"{type(exc).__name__}: {exc}"
    raise CatalogUnavailableError(f"the catalog at {uri} does not answer ({reason}): is its server running "
                                  "and the URI right?")


def directory_storage(directory: str | Path) -> tuple[str, list[str]]:
    """Where Tiled keeps a catalog in the data directory ``directory``, as
    :class:`tiled.server.SimpleTiledServer` lays it out (the embedded catalog; a served
    one without a database of its own).

    Returns
    -------
    catalog : str
        The catalog database: ``<directory>/tiled/catalog.db`` (SQLite).
    writable : list of str
        Tiled's writable storage: the array directory ``<directory>/tiled/data``, then
        the table storage URI, DuckDB in ``<directory>/tiled/storage.duckdb``.
    """
    storage = Path(directory).resolve() / "tiled"
    return str(storage / "catalog.db"), [str(storage / "data"), f"duckdb:///{storage / 'storage.duckdb'}"]


#: API key of every embedded server of this process. Tiled's authentication settings are
#: process-wide: a second embedded server with a key of its own made the first refuse
#: its clients (401 "Invalid API key"); one key for all keeps them all usable.
_EMBEDDED_API_KEY = secrets.token_hex(16)


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

    Raises
    ------
    UsageError
        ``uri`` is not ``http(s)://host[:port]...`` (refused before any connection).
    CatalogUnavailableError
        The server at ``uri`` does not answer within :data:`OPEN_TIMEOUT_S`.
    """
    directory = Path(directory) if directory is not None else data_directory()
    if uri is not None:
        _wait_for_answer(_checked_uri(uri))
        client = from_uri(uri, api_key=_api_key(uri))
        _ensure_containers(client)
        return Catalog(client, None, uri, directory / "spool")

    from tiled.server import SimpleTiledServer

    register_document_exporter()
    frames = directory / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    server = SimpleTiledServer(directory / "tiled", readable_storage=[frames, *(Path(r) for r in storage_roots)],
                               api_key=_EMBEDDED_API_KEY)
    try:
        _, (_, tables) = directory_storage(directory)
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
