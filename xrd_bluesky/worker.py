"""Live analysis on another host: ``xrd-bluesky worker``.

A session started with ``--publish HOST:PORT`` (usually with ``--no-analysis``)
records raw data itself and publishes every document, msgpack-encoded, through
bluesky's 0MQ proxy (``bluesky-0MQ-proxy``; :mod:`xrd_bluesky.zmq_link`). The worker
receives them from the proxy's output port and runs them through the session's
analysis router (:func:`~xrd_bluesky.beamline.analysis_router`: the same analyses, the
same current calibration, gain map and reference lookups in the catalog), writing the
derived runs into the catalog's ``processed`` container with its own spooling writer
(spool and exported files under the worker's data directory). Each derived run's start
document names the worker (``live_worker``: host and proxy address).

Runs the worker did not see from their start (it was started, restarted or
reconnected mid-run) are not analysed: a partial run would give partial derived runs.
Each is logged once, by uid, with the advice to replay it (``xrd-bluesky replay UID``,
:mod:`xrd_bluesky.store.replay`) once it has ended; its raw data is complete in the
catalog, since the session recorded it. A run whose events did not all arrive (the
proxy drops messages for a subscriber that falls too far behind) is analysed but
reported too. On SIGINT or SIGTERM the worker stops receiving, uploads what its
writer holds and returns the list of missed runs; runs still in progress then are
missed as well, and their derived runs stay open in the worker's spool until
``xrd-bluesky sync`` closes them as aborted.

The frames are read where the StreamResource documents say they are, so the frames
directory must be mounted at the same path on the worker's host. The worker reads
frames files while the detector still appends to them, without HDF5 file locks
(:meth:`~xrd_bluesky.frames.reader.FrameRef.read`): a reader's lock would make the
detector's next append fail, and with it the scan.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .beamline import BeamlineDescription, LiveInputs, analysis_router
from .errors import MissingMetadataError
from .schema.documents import document_field, document_uid
from .store import Catalog
from .store.writer import processed_writer
from .zmq_link import DocumentReceiver

logger = logging.getLogger(__name__)

#: Why a run was not analysed, or not completely.
JOINED_MID_RUN = "not analysed: the worker joined it mid-run (its start document was not received)"
STOPPED_MID_RUN = "not completely analysed: the worker stopped before the run ended"
#: The start-document key naming the worker that made a derived run.
WORKER_KEY = "live_worker"
#: Document types and the key naming their parent: a run start, a descriptor, a resource.
_PARENT_KEYS = {"descriptor": "run_start", "resource": "run_start", "stream_resource": "run_start",
                "stop": "run_start", "event": "descriptor", "event_page": "descriptor",
                "stream_datum": "descriptor", "datum": "resource", "datum_page": "resource"}


@dataclass(frozen=True)
class MissedRun:
    """A raw run the worker did not analyse (or not completely).

    Attributes
    ----------
    uid : str
        The raw run.
    reason : str
        Why (:data:`JOINED_MID_RUN`, :data:`STOPPED_MID_RUN`, or lost events).
    """

    uid: str
    reason: str


class Worker:
    """Passes the documents of every run seen from its start to ``router``; names the
    runs it joined mid-way (see the module docstring). Subscribe it to a
    :class:`~xrd_bluesky.zmq_link.DocumentReceiver`.

    Parameters
    ----------
    router : callable
        Receives ``(name, doc)`` of the runs to analyse (an analysis router).
    """

    def __init__(self, router: Callable[[str, dict], None]):
        self.router = router
        self.missed: dict[str, MissedRun] = {}
        self._events: dict[str, Counter] = {}  # open run uid -> events received per stream
        self._parent: dict[str, str] = {}  # descriptor / resource uid -> run uid
        self._stream: dict[str, str] = {}  # descriptor uid -> stream name
        #: Documents of a run not named yet (its start and descriptors came before the worker).
        self.unattributed = 0

    def __call__(self, name: str, doc: dict) -> None:
        try:
            run_uid = self._run_uid(name, doc)
        except MissingMetadataError as exc:
            logger.warning("skipped a %s document: %s", name, exc)
            return
        if run_uid is None:
            self.unattributed += 1
            return
        if run_uid not in self._events:
            self._miss(run_uid, JOINED_MID_RUN)
            if name == "stop":
                self.unattributed = 0  # one run at a time: they were this run's
                self._forget(run_uid)
            return
        if name in ("event", "event_page"):
            stream = self._stream.get(doc["descriptor"], "?")
            self._events[run_uid][stream] += 1 if name == "event" else len(doc.get("seq_num", ()))
        self.router(name, doc)
        if name == "stop":
            self._check_events(run_uid, doc)
            self._forget(run_uid)

    def _run_uid(self, name: str, doc: dict) -> str | None:
        """The run ``doc`` belongs to (None if unknown); starts and new descriptors and
        resources are remembered."""
        what = f"{name} {document_uid(doc)}"
        if name == "start":
            uid = document_field(doc, "uid", str, what)
            self._events[uid] = Counter()
            return uid
        key = _PARENT_KEYS.get(name)
        if key is None:
            raise MissingMetadataError(f"{what}: document type {name!r} is not handled")
        parent = document_field(doc, key, str, what)
        if key != "run_start":
            return self._parent.get(parent)
        if name != "stop":
            self._parent[document_field(doc, "uid", str, what)] = parent
            if name == "descriptor":
                self._stream[doc["uid"]] = str(doc.get("name", "primary"))
        return parent

    def _miss(self, run_uid: str, reason: str) -> None:
        if run_uid not in self.missed:
            self.missed[run_uid] = MissedRun(run_uid, reason)
            logger.warning("run %s %s; replay it with `xrd-bluesky replay %s` once it has ended",
                           run_uid, reason, run_uid)

    def _check_events(self, run_uid: str, stop: dict) -> None:
        """Report a run analysed with events missing (lost between proxy and worker)."""
        expected = stop.get("num_events") or {}
        lost = {stream: n - self._events[run_uid][stream] for stream, n in expected.items()
                if isinstance(n, int) and n > self._events[run_uid][stream]}
        if lost:
            self._miss(run_uid, "analysed without " + ", ".join(f"{n} of its {expected[s]} {s} events"
                                                                  for s, n in lost.items()) + " (lost in transit)")

    def _forget(self, run_uid: str) -> None:
        self._events.pop(run_uid, None)
        for uid in [k for k, v in self._parent.items() if v == run_uid]:
            del self._parent[uid]
            self._stream.pop(uid, None)

    def finish(self) -> None:
        """Mark the runs still in progress as missed (the worker stops)."""
        for run_uid in list(self._events):
            self._miss(run_uid, STOPPED_MID_RUN)


def run_worker(address: str, catalog: Catalog, beamline: BeamlineDescription, *, export_dir: str | Path,
               on_listening: Callable[[], None] = lambda: None) -> Worker:
    """Analyse the runs published through the 0MQ proxy at ``address`` until SIGINT
    or SIGTERM (see the module docstring); then upload what the writer holds.

    Parameters
    ----------
    address : str
        The proxy's output port, ``HOST:PORT`` or a 0MQ endpoint.
    catalog : Catalog
        The catalog the session records into (remote).
    beamline : BeamlineDescription
        The beamline, as the session's (detectors, nominal geometry, corrections,
        monitors, frame storage).
    export_dir : path
        Where calibrations and gain maps export files (the worker's data directory).
    on_listening : callable, optional
        Called once the worker listens.

    Returns
    -------
    Worker
        The finished worker: :attr:`Worker.missed` (runs not analysed, or not
        completely) and :attr:`Worker.unattributed`.
    """
    writer = processed_writer(catalog)
    host = socket.gethostname()
    router = analysis_router(LiveInputs(catalog, settle=writer.flush), beamline, writer, export_dir=export_dir,
                             provenance=lambda analysis, parent_start: {WORKER_KEY: {"host": host, "zmq": address}})
    worker = Worker(router)
    receiver = DocumentReceiver(address, on_listening=on_listening)
    receiver.subscribe(worker)
    try:
        receiver.start()
    finally:
        worker.finish()
        writer.close()
    return worker
