"""The writer that puts Bluesky documents into the catalog without ever blocking a scan.

:class:`SpoolingWriter` is what the RunEngine (raw runs) and the analysis router
(derived runs) call. On the caller's thread it only appends the document to the run's
spool file (:mod:`.spool`) and queues it; a background thread uploads queued documents
to Tiled with bluesky-tiled-plugins' ``TiledWriter`` and fsyncs the spool at a bounded
interval. Raw runs are uploaded while they are recorded, each document as it comes
while the uploads keep up; when documents queue during an upload (a detector faster
than the catalog), at most every ``upload_interval_s`` (0.5 s), the documents that
queued meanwhile together (a request per stream for their events, one per stream
resource for their frames), so that a fast detector costs the catalog a few requests
a second, not a growing lag; a run's stop, a flush or the close is uploaded at once.
Derived runs are written whole at their stop, read back from their spool file
(nothing of a run is held in memory while it is recorded): in one request to the
server's bulk write endpoint (:mod:`.bulk_write`) where it offers one, else node by
node with fewer requests than while recording (:func:`whole_run_writer`). A bulk
write the server refuses or fails leaves the run's spool file, as any failed upload.
If the catalog is down, slow or killed, uploads of the affected runs stop, their
spool files stay, and ``xrd-bluesky sync`` (:mod:`.sync`) back-fills them later. A
run whose upload completed has its spool file removed.

A spool file that cannot be written is the one failure that reaches the caller
(:class:`~xrd_bluesky.store.spool.SpoolError`): for the raw writer it stops the scan,
since the raw data would otherwise not be recorded.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bluesky_tiled_plugins import TiledWriter

from ..compat.bluesky_tiled_plugins import FlushingTiledWriter
from .bulk_write import BulkWriteError, bulk_write_url, post_run, whole_run_writer
from .catalog import answers
from .spool import OpenSpool, decode, encode, spool_file

logger = logging.getLogger(__name__)

#: Most documents uploaded together (those queued since the last upload, see SpoolingWriter).
MAX_COALESCED = 1000


def tiled_writer(container, batch_size: int) -> TiledWriter:
    """bluesky-tiled-plugins' writer into ``container``, writing every ``batch_size``
    events. Every array goes to array storage: TiledWriter would otherwise keep arrays
    of up to 16 elements in the table, where they read back as strings."""
    return TiledWriter(container, batch_size=batch_size, max_array_size=0)


def flushing_writer(container) -> FlushingTiledWriter:
    """bluesky-tiled-plugins' writer into ``container`` that writes what it was given
    when flushed (at most :data:`MAX_COALESCED` events a stream are held), with every
    array in array storage, as :func:`tiled_writer`'s."""
    return FlushingTiledWriter(container, batch_size=MAX_COALESCED, max_array_size=0)


@dataclass
class _Run:
    """Upload state of one run."""

    spool: OpenSpool
    writer: TiledWriter | FlushingTiledWriter | None = None
    failed: str = ""
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
    batch_size : int, optional
        Events (and stream datums) per upload, as ``TiledWriter`` batches them (and the
        rest at the stop). None (the default): what queued since the last upload (at
        most :data:`MAX_COALESCED` documents), see ``upload_interval_s``.
    upload_interval_s : float
        With ``batch_size`` None, while documents queue during the uploads, the shortest
        time (s) between the starts of two uploads: live readers see a document within
        about this time and the upload. A stop, a :meth:`flush` and :meth:`close` do not
        wait for it, nor does anything while the uploads keep up.
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
    bulk : bool
        With ``whole_runs``: write each run by one request to the server's bulk write
        endpoint (:mod:`.bulk_write`) when the server offers it (``xrd-bluesky serve``
        does; a stock Tiled server does not, and gets the run node by node).
    """

    def __init__(self, container, spool_dir: str | Path, *, batch_size: int | None = None,
                 upload_interval_s: float = 0.5, fsync_interval_s: float = 0.5,
                 max_queued: int = 20_000, max_queued_bytes: int = 512 * 2**20, stop_wait_s: float = 120.0,
                 stall_s: float = 5.0, upload_lock: threading.Lock | None = None, whole_runs: bool = False,
                 bulk: bool = True):
        self.container = container
        self.whole_runs = whole_runs
        self.bulk = bulk
        self._bulk_asked = False
        self._bulk_url: str | None = None
        self.upload_lock = upload_lock or threading.Lock()
        self.spool_dir = Path(spool_dir)
        self.batch_size = batch_size
        self.upload_interval_s = upload_interval_s
        self._upload_started = float("-inf")  # time.monotonic() of the last coalesced upload
        self._behind = False  # documents were queued when the last upload ended
        self._hurry = threading.Event()  # a caller waits: upload without waiting for the interval
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
        self._received = 0  # documents given to the uploader, and handled by it, since the start
        self._handled = 0
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
            self._received += 1
            if queued:
                self._queued += 1
                self._queued_bytes += len(line)
                self.max_depth = max(self.max_depth, self._queued)
        # a failed run's documents still pass through the queue (not counted), so that its
        # stop reaches the uploader after every document before it
        self._queue.put((run_uid, name, line if queued else b"", queued))
        if name == "stop":
            self._hurry.set()
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
        """Wait until the run is uploaded (see :meth:`_wait_while_answered`)."""
        self._wait_while_answered(run.uploaded.is_set, self.stop_wait_s)

    def _wait_while_answered(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``done()``, at most ``timeout_s`` (s) and while the server answers:
        a slow request on a busy machine, or a bulk write of a whole run, is waited for; a
        dead server is not. A server busy with a long write may take a while to answer
        the check: it has ``stall_s`` to. Whether it is done."""
        deadline = time.monotonic() + timeout_s
        answered_until = 0.0  # a stalled request is checked on by asking the server, once a stall_s
        while not done():
            now = time.monotonic()
            if now > deadline or self._offline:
                return done()
            if not self.uploading() and now >= answered_until:
                if not answers(self.container, timeout_s=self.stall_s):
                    return done()
                answered_until = now + self.stall_s
            time.sleep(0.01)
        return True

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
        """Wait, while the server answers and at most ``timeout_s`` (s), until every
        document queued so far was handled (not those queued meanwhile: a run being
        recorded does not hold the caller up); True if they were."""
        received = self._received
        self._hurry.set()
        return self._wait_while_answered(lambda: self._handled >= received, timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Upload what is queued (see :meth:`flush`), fsync and close the spool files of
        runs still open (they stay for ``sync``)."""
        if self.flush(timeout_s):
            self._queue.put(None)
            self._hurry.set()
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
            items = self._next_items()
            closing = items[-1] is None
            for run_uid, group in itertools.groupby(items[:-1] if closing else items, key=lambda item: item[0]):
                self._upload_group(run_uid, list(group))
            if closing:
                return
            self._behind = not self._queue.empty()

    def _next_items(self) -> list:
        """The next queued document, waited for, and those queued behind it (when the
        uploads fall behind, until the interval since the last upload ended: see
        ``upload_interval_s``), up to :data:`MAX_COALESCED` and the close (None)."""
        items = [self._queue.get()]
        if self.batch_size is not None or self.whole_runs or items[-1] is None:
            return items
        if self._behind:
            self._hurry.wait(self._upload_started + self.upload_interval_s - time.monotonic())
        self._hurry.clear()  # a stop queued from now on sets it again, for the next call
        self._upload_started = time.monotonic()
        while items[-1] is not None and len(items) < MAX_COALESCED:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _upload_group(self, run_uid: str, group: list) -> None:
        """Upload consecutive queued documents of one run, and account for them."""
        run = self._runs.get(run_uid)
        stops = group[-1][1] == "stop"
        if run is not None and not run.failed and (stops or not self.whole_runs):
            # a whole run is read back from its spool file, which has every document
            # up to the stop: memory does not grow with the length of a run
            self._upload(run_uid, run, run.spool.path.read_bytes() if self.whole_runs
                         else b"".join(line for _, _, line, _ in group))
        with self._lock:
            for _, _, line, counted in group:
                self._handled += 1
                if counted:
                    self._queued -= 1
                    self._queued_bytes -= len(line)
        if run is not None and stops:
            self._finish(run_uid, run)

    def _upload(self, run_uid: str, run: _Run, lines: bytes) -> None:
        """Upload ``lines`` (spool lines of one run, in order; a whole run if
        ``whole_runs``: in one request where the server offers it)."""
        name = decode(lines[:lines.index(b"\n")])[0]  # the first document's
        what = f"{name} document"  # what was being uploaded, for the message of a failure
        if name == "start" and self._offline and not answers(self.container):
            self._fail(run_uid, run, "catalog unreachable")
            return
        try:
            self._inflight_since = time.monotonic()
            if self.whole_runs and self._bulk_write_url() is not None:
                what = "whole run (bulk write)"
                with self.upload_lock:
                    post_run(self.container, self._bulk_url, lines)
            else:
                # the lock document by document: the other writer keeps its pace
                for name, doc in map(decode, lines.splitlines()):
                    what = f"{name} document"
                    self._inflight_since = time.monotonic()  # waiting for the lock counts: the other may be stuck
                    with self.upload_lock:
                        if name == "start":
                            run.writer = self._run_writer()
                        run.writer(name, doc)
                if isinstance(run.writer, FlushingTiledWriter):
                    what = "events and stream datums queued together"
                    self._inflight_since = time.monotonic()
                    with self.upload_lock:
                        run.writer.flush()
            self._offline = False
        except Exception as exc:  # whatever the server or network does, the spool has it
            self._offline = not isinstance(exc, BulkWriteError)  # a refused write: the server answered
            self._fail(run_uid, run, f"{what}: {type(exc).__name__}: {exc}")
        finally:
            self._inflight_since = None

    def _run_writer(self) -> TiledWriter | FlushingTiledWriter:
        """The writer of a new run (see ``whole_runs`` and ``batch_size``)."""
        if self.whole_runs:
            return whole_run_writer(self.container)
        if self.batch_size is None:
            return flushing_writer(self.container)
        return tiled_writer(self.container, self.batch_size)

    def _bulk_write_url(self) -> str | None:
        """The server's bulk write endpoint for this container (None: a stock Tiled
        server), asked once (see :mod:`.bulk_write`)."""
        if not self._bulk_asked:
            self._bulk_url = bulk_write_url(self.container) if self.bulk else None
            self._bulk_asked = True
        return self._bulk_url

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
                spools = [run.spool for run in self._runs.values()]
            for spool in spools:  # outside the lock: the caller's next document does not wait for the disk
                spool.sync()


def catalog_writers(catalog) -> tuple[SpoolingWriter, SpoolingWriter]:
    """The raw and the processed writer of a :class:`~xrd_bluesky.store.catalog.Catalog`,
    spooling to ``<catalog.spool_dir>/raw`` and ``/processed``. Close both when done."""
    return raw_writer(catalog), processed_writer(catalog)


def raw_writer(catalog) -> SpoolingWriter:
    """The writer of raw runs into ``catalog.raw`` (spool ``<catalog.spool_dir>/raw``).
    Close it when done."""
    return SpoolingWriter(catalog.raw, catalog.spool_dir / "raw", upload_lock=catalog.upload_lock)


def processed_writer(catalog, *, bulk: bool = True) -> SpoolingWriter:
    """The writer of derived runs into ``catalog.processed``: each run is written whole
    at its stop, from its spool file, in one request where the server offers the bulk
    write endpoint (``bulk``, see :mod:`.bulk_write`), else node by node (see
    :func:`whole_run_writer`). Close it when done."""
    return SpoolingWriter(catalog.processed, catalog.spool_dir / "processed", upload_lock=catalog.upload_lock,
                          whole_runs=True, bulk=bulk)
