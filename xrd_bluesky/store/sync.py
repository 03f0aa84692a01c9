"""Back-fill the catalog from the spool (``xrd-bluesky sync``).

Every spool file left behind is a run whose upload did not complete: the catalog was
down, or the process died. For each one not held by a live writer, ``sync``:

1. reads every document (a line that is not one is an error naming file and line);
2. closes a run that never stopped (the process was killed) with a stop document of
   ``exit_status="abort"``, appended to the spool file first;
3. writes the run with bluesky-tiled-plugins' ``TiledWriter`` (as live), after deleting a
   partial copy in the catalog, so no document is ever there twice; a run already
   complete in the catalog (it has its stop) is left as it is;
4. removes the spool file.

Running it again finds nothing to do.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import CONTAINERS
from .spool import SUFFIX, SpoolError, append, encode, is_locked, read_spool
from .writer import tiled_writer

logger = logging.getLogger(__name__)

#: Events per upload when back-filling (no live reader is waiting).
SYNC_BATCH_SIZE = 100


@dataclass
class SyncReport:
    """What a sync did, per ``container/uid``."""

    written: list[str] = field(default_factory=list)
    already_complete: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    documents: int = 0

    def lines(self) -> list[str]:
        """A printable summary."""
        return [f"written: {len(self.written)} runs ({self.documents} documents)"
                + "".join(f"\n  {k}" for k in self.written),
                f"already complete in the catalog: {len(self.already_complete)}"
                + "".join(f"\n  {k}" for k in self.already_complete),
                f"closed with exit_status 'abort' (no stop document): {len(self.aborted)}"
                + "".join(f"\n  {k}" for k in self.aborted),
                f"skipped, still being recorded: {len(self.in_progress)}"
                + "".join(f"\n  {k}" for k in self.in_progress)]


def sync(catalog, spool_dir: str | Path) -> SyncReport:
    """Back-fill ``catalog`` (a :class:`~xrd_bluesky.store.catalog.Catalog`) from the
    spool in ``spool_dir`` (with ``raw/`` and ``processed/`` subdirectories)."""
    report = SyncReport()
    for name in CONTAINERS:
        folder = Path(spool_dir) / name
        if not folder.is_dir():
            continue
        container = getattr(catalog, name)
        for path in sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime):
            key = f"{name}/{path.stem}"
            if is_locked(path):
                report.in_progress.append(key)
                continue
            _sync_file(container, path, key, report)
            path.unlink()
    return report


def _sync_file(container, path: Path, key: str, report: SyncReport) -> None:
    documents = list(read_spool(path))
    if not documents or documents[0][0] != "start":
        raise SpoolError(f"{path} does not begin with a start document")
    start = documents[0][1]
    if documents[-1][0] != "stop":
        stop = _abort_stop(start, documents)
        append(path, encode("stop", stop))
        documents.append(("stop", stop))
        report.aborted.append(key)
    uid = start["uid"]
    if uid in container:
        if container[uid].metadata.get("stop") is not None:
            report.already_complete.append(key)
            return
        logger.info("%s: deleting the partial copy in the catalog before writing it whole", key)
        container[uid].delete(recursive=True, external_only=False)
    writer = tiled_writer(container, SYNC_BATCH_SIZE)
    for name, doc in documents:
        writer(name, doc)
    report.written.append(key)
    report.documents += len(documents)


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
