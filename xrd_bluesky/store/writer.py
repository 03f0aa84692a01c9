"""The writer that puts Bluesky documents into the catalog without ever blocking a scan.

:class:`SpoolingWriter` is what the RunEngine (raw runs) and the analysis router
(derived runs) call. On the caller's thread it only appends the document to the run's
spool file (:mod:`.spool`) and queues it; a background thread uploads queued documents
to Tiled with bluesky-tiled-plugins' ``TiledWriter`` and fsyncs the spool at a bounded
interval. Raw runs are uploaded while they are recorded; derived runs (small) are
written whole at their stop, with fewer requests (:func:`whole_run_writer`). If the
catalog is down, slow or killed, uploads of the affected runs stop,
their spool files stay, and ``xrd-bluesky sync`` (:mod:`.sync`) back-fills them later.
A run whose upload completed has its spool file removed.

A spool file that cannot be written is the one failure that reaches the caller
(:class:`~xrd_bluesky.store.spool.SpoolError`): for the raw writer it stops the scan,
since the raw data would otherwise not be recorded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from bluesky_tiled_plugins import TiledWriter
from bluesky_tiled_plugins.writing import tiled_writer as _plugin_writer

from .catalog import answers
from .spool import OpenSpool, decode, encode, spool_file

logger = logging.getLogger(__name__)

#: Events per write of a run written whole (all of them at its stop).
WHOLE_RUN_BATCH_SIZE = 2**62
#: bluesky-tiled-plugins releases whose private run writer :func:`whole_run_writer` extends.
_HOOKED_PLUGIN_RELEASES = ("2.0.",)


def tiled_writer(container, batch_size: int) -> TiledWriter:
    """bluesky-tiled-plugins' writer into ``container``, writing every ``batch_size``
    events. Every array goes to array storage: TiledWriter would otherwise keep arrays
    of up to 16 elements in the table, where they read back as strings."""
    return TiledWriter(container, batch_size=batch_size, max_array_size=0)


def whole_run_writer(container) -> TiledWriter:
    """The writer of runs written whole, at their stop (derived runs): as
    :func:`tiled_writer` with every event of a stream in one write, the same nodes and
    content, but the run's stream tree is closed (for Tiled's live subscribers) by one
    request, the run's, not by one per stream, table and array, since none of them
    was written before the run's end.

    This is the one private hook of the package into bluesky-tiled-plugins (its
    ``_RunWriter``, ``TiledWriter._factory``): it is checked against the release.

    Raises
    ------
    RuntimeError
        The installed bluesky-tiled-plugins is not a release this hook was written for.
    """
    release = version("bluesky-tiled-plugins")
    if not release.startswith(_HOOKED_PLUGIN_RELEASES):
        raise RuntimeError(f"xrd_bluesky.store.writer.whole_run_writer extends bluesky-tiled-plugins "
                           f"{' or '.join(_HOOKED_PLUGIN_RELEASES)}x, not the installed {release}: check its "
                           "_RunWriter and TiledWriter._factory and update the hook")
    return _WholeRunTiledWriter(container, batch_size=WHOLE_RUN_BATCH_SIZE, max_array_size=0)


class _WholeRunWriter(_plugin_writer._RunWriter):
    """bluesky-tiled-plugins' writer of one run, closing only the run's node at its stop."""

    def _close_stream_tree(self) -> None:
        if self.root_node is not None:
            self.root_node.close_stream()


class _WholeRunTiledWriter(TiledWriter):
    """``TiledWriter`` writing each run with :class:`_WholeRunWriter` (normalized as
    ``TiledWriter`` does; no backups: the spool keeps the run)."""

    def _factory(self, name, doc):
        run_writer = _WholeRunWriter(self.client, batch_size=self._batch_size, max_array_size=self._max_array_size)
        normalizer = self._normalizer(patches=self.patches, spec_to_mimetype=self.spec_to_mimetype)
        normalizer.subscribe(run_writer)
        return [normalizer], []


@dataclass
class _Run:
    """Upload state of one run."""

    spool: OpenSpool
    writer: TiledWriter | None = None
    failed: str = ""
    held: list[bytes] = field(default_factory=list)  # whole runs: its documents until its stop
    uploaded: threading.Event = field(default_factory=threading.Event)


class SpoolingWriter:
    """Spool every document durably and upload it to a Tiled container in the background.

    Parameters
    ----------
    container : tiled container client
        Where runs are written (``catalog.raw`` or ``catalog.processed``), resolved
        once: the writer never looks it up again while the server may be down.
    spool_dir : path
        This container's spool directory.
    batch_size : int
        Events per upload (1: each as it arrives, so live readers see it at once).
    fsync_interval_s : float
        Longest time (s) a written document stays un-fsynced: a machine crash loses at
        most this much; killing the process loses nothing that was written.
    max_queued : int
        Most documents waiting for upload; beyond it, or beyond ``max_queued_bytes``,
        a run's upload is abandoned (its spool file is kept for ``sync``), so memory
        stays bounded whatever the server does.
    max_queued_bytes : int
        Most bytes of documents waiting for upload.
    stop_wait_s : float
        At a run's stop, how long (s) the caller waits for the run's upload to finish
        while uploads progress, so that a run is in the catalog when the scan returns.
    stall_s : float
        An upload request taking longer than this (s) means the server is unwell: the
        stop no longer waits for it. Each request counts on its own: a document whose
        upload takes many requests (a whole run's stop) is waited for while they answer.
    upload_lock : threading.Lock, optional
        Held around each upload; writers into one server share it (see
        :attr:`~xrd_bluesky.store.catalog.Catalog.upload_lock`).
    whole_runs : bool
        Upload each run in one go at its stop (derived runs: see :func:`whole_run_writer`)
        instead of while it is recorded (raw runs). Its documents wait in its spool file
        (and in memory: a derived run is small), so nothing of it is in the catalog
        before its stop, and all of it is once the upload completed.
    """

    def __init__(self, container, spool_dir: str | Path, *, batch_size: int = 1, fsync_interval_s: float = 0.5,
                 max_queued: int = 20_000, max_queued_bytes: int = 512 * 2**20, stop_wait_s: float = 120.0,
                 stall_s: float = 5.0, upload_lock: threading.Lock | None = None, whole_runs: bool = False):
        self.container = container
        self.whole_runs = whole_runs
        self.upload_lock = upload_lock or threading.Lock()
        self.spool_dir = Path(spool_dir)
        self.batch_size = batch_size
        self.fsync_interval_s = fsync_interval_s
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.stop_wait_s = stop_wait_s
        self.stall_s = stall_s
        self.max_depth = 0
        self._runs: dict[str, _Run] = {}
        self._run_of: dict[str, str] = {}  # descriptor / resource uid -> run uid
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued = 0
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._inflight_since: float | None = None
        self._offline = False
        self._closing = threading.Event()
        self._uploader = threading.Thread(target=self._upload_loop, name="spooling-writer-upload", daemon=True)
        self._syncer = threading.Thread(target=self._sync_loop, name="spooling-writer-fsync", daemon=True)
        self._hooks = {"request": self._progress, "response": self._progress}
        if container is not None:
            for event, hook in self._hooks.items():
                container.context.http_client.event_hooks[event].append(hook)
        self._uploader.start()
        self._syncer.start()

    # -- the caller's side ---------------------------------------------------------
    def __call__(self, name: str, doc: dict) -> None:
        run_uid = self._run_uid(name, doc)
        line = encode(name, doc)
        with self._lock:
            if name == "start":
                self._runs[run_uid] = _Run(OpenSpool(spool_file(self.spool_dir, run_uid)))
            run = self._runs[run_uid]
            run.spool.write(line)
            if name == "stop":
                run.spool.sync()
                self._run_of = {k: v for k, v in self._run_of.items() if v != run_uid}
            if not run.failed and (self._queued >= self.max_queued
                                   or self._queued_bytes + len(line) > self.max_queued_bytes):
                self._fail(run_uid, run, f"upload queue full ({self._queued} documents, "
                                         f"{self._queued_bytes / 2**20:.0f} MiB)")
            queued = not run.failed
            if queued:
                self._queued += 1
                self._queued_bytes += len(line)
                self.max_depth = max(self.max_depth, self._queued)
        # a failed run's documents still pass through the queue (not counted), so that its
        # stop reaches the uploader after every document before it
        self._queue.put((run_uid, name, line if queued else b"", queued))
        if name == "stop":
            self._wait_for_upload(run)

    def _run_uid(self, name: str, doc: dict) -> str:
        if name == "start":
            return doc["uid"]
        if name in ("descriptor", "resource", "stream_resource", "stop"):
            run_uid = doc["run_start"]
            if name != "stop":
                self._run_of[doc["uid"]] = run_uid
            return run_uid
        if name in ("event", "event_page", "stream_datum"):
            return self._run_of[doc["descriptor"]]
        if name in ("datum", "datum_page"):
            return self._run_of[doc["resource"]]
        raise ValueError(f"unknown document type {name!r}")

    def _wait_for_upload(self, run: _Run) -> None:
        """Wait until the run is uploaded, while the server answers (a slow request on a
        busy machine is waited for; a dead server is not)."""
        deadline = time.monotonic() + self.stop_wait_s
        while not run.uploaded.wait(0.05):
            if time.monotonic() > deadline or self._offline or (not self.uploading() and not answers(self.container)):
                return

    def uploading(self) -> bool:
        """Whether uploads progress: the server answered the last request and the one in
        flight (if any) is younger than ``stall_s``."""
        since = self._inflight_since
        return not self._offline and (since is None or time.monotonic() - since <= self.stall_s)

    @property
    def depth(self) -> int:
        """Documents waiting for upload."""
        return self._queued

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait, while uploads progress and at most ``timeout_s`` (s), until every queued
        document was handled; True if it was."""
        deadline = time.monotonic() + timeout_s
        while self._queued and self.uploading() and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queued

    def close(self, timeout_s: float = 30.0) -> None:
        """Upload what is queued (see :meth:`flush`), fsync and close the spool files of
        runs still open (they stay for ``sync``)."""
        if self.flush(timeout_s):
            self._queue.put(None)
            self._uploader.join(timeout_s)
        self._closing.set()
        with self._lock:
            for run_uid, run in list(self._runs.items()):
                run.spool.close()
                del self._runs[run_uid]
        if self.container is not None:
            for event, hook in self._hooks.items():
                hooks = self.container.context.http_client.event_hooks[event]
                if hook in hooks:  # closed once already
                    hooks.remove(hook)

    def _progress(self, _message) -> None:
        """An upload request was sent or answered (an httpx event hook): the stall clock
        of the document in flight restarts."""
        if threading.current_thread() is self._uploader and self._inflight_since is not None:
            self._inflight_since = time.monotonic()

    # -- the background side -------------------------------------------------------
    def _fail(self, run_uid: str, run: _Run, reason: str) -> None:
        if not run.failed:
            run.failed = reason
            logger.warning("run %s: upload to the catalog abandoned (%s); its documents are in %s: run "
                           "`xrd-bluesky sync` when the catalog is back", run_uid, reason, run.spool.path)

    def _upload_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            run_uid, name, line, counted = item
            run = self._runs.get(run_uid)
            if run is not None and not run.failed:
                if self.whole_runs and name != "stop":
                    run.held.append(line)
                else:
                    self._upload(run_uid, run, [*run.held, line])
                    run.held.clear()
            if counted:
                with self._lock:
                    self._queued -= 1
                    self._queued_bytes -= len(line)
            if run is not None and name == "stop":
                self._finish(run_uid, run)

    def _upload(self, run_uid: str, run: _Run, lines: list[bytes]) -> None:
        """Upload ``lines`` (spool lines of one run, in order)."""
        documents = [decode(line) for line in lines]
        if documents[0][0] == "start" and self._offline and not answers(self.container):
            self._fail(run_uid, run, "catalog unreachable")
            return
        name = documents[0][0]
        try:
            for name, doc in documents:  # the lock document by document: the other writer keeps its pace
                self._inflight_since = time.monotonic()  # waiting for the lock counts: the other may be stuck
                with self.upload_lock:
                    if name == "start":
                        run.writer = (whole_run_writer(self.container) if self.whole_runs
                                      else tiled_writer(self.container, self.batch_size))
                    run.writer(name, doc)
            self._offline = False
        except Exception as exc:  # whatever the server or network does, the spool has it
            self._offline = True
            self._fail(run_uid, run, f"{name} document: {type(exc).__name__}: {exc}")
        finally:
            self._inflight_since = None

    def _finish(self, run_uid: str, run: _Run) -> None:
        with self._lock:
            self._runs.pop(run_uid, None)
            if not run.failed:
                run.spool.path.unlink()
            run.spool.close()
        run.uploaded.set()

    def _sync_loop(self) -> None:
        while not self._closing.wait(self.fsync_interval_s):
            with self._lock:
                for run in self._runs.values():
                    run.spool.sync()


def catalog_writers(catalog) -> tuple[SpoolingWriter, SpoolingWriter]:
    """The raw and the processed writer of a :class:`~xrd_bluesky.store.catalog.Catalog`,
    spooling to ``<catalog.spool_dir>/raw`` and ``/processed``. Close both when done."""
    return raw_writer(catalog), processed_writer(catalog)


def raw_writer(catalog) -> SpoolingWriter:
    """The writer of raw runs into ``catalog.raw`` (spool ``<catalog.spool_dir>/raw``).
    Close it when done."""
    return SpoolingWriter(catalog.raw, catalog.spool_dir / "raw", upload_lock=catalog.upload_lock)


def processed_writer(catalog, batch_size: int | None = None) -> SpoolingWriter:
    """The writer of derived runs into ``catalog.processed``: each run is written whole
    at its stop (see :func:`whole_run_writer`), from its spool file. Close it when done.

    ``batch_size`` is ignored (a derived run is written in one batch); callers that
    still pass one are unaffected."""
    return SpoolingWriter(catalog.processed, catalog.spool_dir / "processed", upload_lock=catalog.upload_lock,
                          whole_runs=True)
