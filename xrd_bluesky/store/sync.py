"""Back-fill the catalog from the spool (``xrd-bluesky sync``).

Every spool file left behind is a run whose upload did not complete: the catalog was
down, or the process died. For each one not held by a live writer, ``sync``:

1. reads every document and checks the file (one run: a start document first, whose
   uid is a safe run uid and the file's name, every other document of that run, a stop
   document last if any);
2. closes a run that never stopped (the process was killed) with a stop document of
   ``exit_status="abort"``, appended to the spool file first;
3. writes the run with bluesky-tiled-plugins' ``TiledWriter`` (as live), after deleting a
   partial copy in the catalog, so no document is ever there twice; a run already
   complete in the catalog (it has its stop) is left as it is;
4. removes the spool file.

A file that cannot be read, is not valid, or whose run the catalog does not take is
left in the spool and reported with the reason (:attr:`SyncReport.failed`); the other
files are synced. A catalog that stops answering stops the sync
(:class:`~xrd_bluesky.store.catalog.CatalogUnavailableError`).

Running it again finds nothing to do.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import XRDBlueskyError
from ..schema.documents import check_uid, document_field
from .catalog import CONTAINERS, CatalogUnavailableError, answers, stored_run
from .spool import SUFFIX, SpoolError, append, encode, is_locked, read_spool
from .writer import tiled_writer

logger = logging.getLogger(__name__)

#: Events per upload when back-filling (no live reader is waiting).
SYNC_BATCH_SIZE = 100
#: The key of each document type that closing an aborted run reads (:func:`_abort_stop`).
_ABORT_KEYS = {"descriptor": "uid", "event": "descriptor"}


@dataclass
class SyncReport:
    """What a sync did, per ``container/uid`` (``container/file name`` for a file not
    synced, with the reason)."""

    written: list[str] = field(default_factory=list)
    already_complete: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    documents: int = 0

    @property
    def ok(self) -> bool:
        """Whether every spool file not held by a live writer was synced (``xrd-bluesky
        sync`` exits with status 1 otherwise)."""
        return not self.failed

    def lines(self) -> list[str]:
        """A printable summary."""
        return [f"written: {len(self.written)} runs ({self.documents} documents)"
                + "".join(f"\n  {k}" for k in self.written),
                f"already complete in the catalog: {len(self.already_complete)}"
                + "".join(f"\n  {k}" for k in self.already_complete),
                f"closed with exit_status 'abort' (no stop document): {len(self.aborted)}"
                + "".join(f"\n  {k}" for k in self.aborted),
                f"skipped, still being recorded: {len(self.in_progress)}"
                + "".join(f"\n  {k}" for k in self.in_progress),
                f"NOT SYNCED, left in the spool: {len(self.failed)}"
                + "".join(f"\n  {k}" for k in self.failed)]


def sync(catalog, spool_dir: str | Path) -> SyncReport:
    """Back-fill ``catalog`` (a :class:`~xrd_bluesky.store.catalog.Catalog`) from the
    spool in ``spool_dir`` (with ``raw/`` and ``processed/`` subdirectories).

    Raises
    ------
    CatalogUnavailableError
        The catalog does not answer (the files not yet synced stay in the spool).
    """
    report = SyncReport()
    for name in CONTAINERS:
        folder = Path(spool_dir) / name
        if not folder.is_dir():
            continue
        container = getattr(catalog, name)
        for path in _spool_files(folder):
            if _sync_one(container, path, name, report):
                path.unlink()
    return report


def _spool_files(folder: Path) -> list[Path]:
    """The spool files in ``folder``, oldest first (one its live writer removes meanwhile
    is left out: it was uploaded)."""
    dated = []
    for path in folder.glob(f"*{SUFFIX}"):
        try:
            dated.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue
    return [path for _, path in sorted(dated)]


def _sync_one(container, path: Path, name: str, report: SyncReport) -> bool:
    """Sync one spool file of container ``name``; True if it can be removed. A file that
    is unreadable, not valid, or refused by the catalog goes to ``report.failed``."""
    key = f"{name}/{path.stem}"
    try:
        if is_locked(path):
            report.in_progress.append(key)
            return False
        _sync_file(container, path, key, report)
    except FileNotFoundError:  # its live writer uploaded it and removed it meanwhile
        return False
    except CatalogUnavailableError:
        raise
    except (XRDBlueskyError, OSError) as exc:  # unreadable, or not a valid spool file
        report.failed.append(f"{name}/{path.name}: {exc}")
        return False
    except Exception as exc:  # the catalog (or its writer) did not take a document of the run
        if not answers(container):
            raise CatalogUnavailableError(f"the catalog stopped answering while syncing {path} ({type(exc).__name__}: "
                                          f"{exc}); the spool keeps the runs not synced") from exc
        report.failed.append(f"{name}/{path.name}: the catalog did not take the run: {type(exc).__name__}: {exc}")
        return False
    return True


def _sync_file(container, path: Path, key: str, report: SyncReport) -> None:
    documents = list(read_spool(path))
    start = _checked_start(path, documents)
    uid = start["uid"]
    if documents[-1][0] != "stop":
        stop = _abort_stop(start, documents)
        append(path, encode("stop", stop))
        documents.append(("stop", stop))
        report.aborted.append(key)
    stored = stored_run(container, uid)
    if stored is not None:
        if stored.metadata.get("stop") is not None:
            report.already_complete.append(key)
            return
        logger.info("%s: deleting the partial copy in the catalog before writing it whole", key)
        stored.delete(recursive=True, external_only=False)
    writer = tiled_writer(container, SYNC_BATCH_SIZE)
    for name, doc in documents:
        writer(name, doc)
    report.written.append(key)
    report.documents += len(documents)


def _checked_start(path: Path, documents: list[tuple[str, dict]]) -> dict:
    """The start document of the spool file ``path``, after checking that the file holds
    one run: its start first, named by a safe uid that is the file's name, every other
    document linked to it, a stop (if any) last.

    Raises
    ------
    SpoolError, MissingMetadataError
        Naming the file (and the line) at fault.
    """
    if not documents or documents[0][0] != "start":
        raise SpoolError(f"{path} does not begin with a start document")
    start = documents[0][1]
    uid = check_uid(start.get("uid"), f"the uid in the start document of {path}")
    if path.stem != uid:
        raise SpoolError(f"{path} holds run {uid}, not the run its name says")
    for number, (name, doc) in enumerate(documents[1:], start=2):
        what = f"{path} line {number} ({name})"
        if name == "start":
            raise SpoolError(f"{what}: a second start document")
        if name == "stop" and number < len(documents):
            raise SpoolError(f"{what}: documents follow the stop document")
        if name in ("descriptor", "stop") and document_field(doc, "run_start", str, what) != uid:
            raise SpoolError(f"{what} belongs to run {doc['run_start']}, not to {uid}")
        if name in _ABORT_KEYS:
            document_field(doc, _ABORT_KEYS[name], str, what)
    return start


def _abort_stop(start: dict, documents: list[tuple[str, dict]]) -> dict:
    """The stop document of a run that ended without one (the process was killed)."""
    streams: dict[str, str] = {}
    counts: dict[str, int] = {}
    for name, doc in documents:
        if name == "descriptor":
            streams[doc["uid"]] = doc.get("name", "primary")
        elif name == "event":
            stream = streams.get(doc["descriptor"], "primary")
            counts[stream] = counts.get(stream, 0) + 1
    last = max((doc.get("time", 0.0) for _, doc in documents), default=time.time())
    return {"uid": str(uuid.uuid4()), "run_start": start["uid"], "time": last, "exit_status": "abort",
            "reason": "the recording process ended without closing the run (killed?); closed by xrd-bluesky sync",
            "num_events": counts}
