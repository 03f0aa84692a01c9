"""One replay job, as both ways of replaying many runs (:mod:`.parallel_replay` in this
process, :mod:`.dask_replay` on Dask workers) run it: replay a raw run, write its
derived runs through a processed writer, check they are stored, and report the
outcome as plain data."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ..errors import XRDBlueskyError
from .catalog import stored_run
from .replay import ReplayedRun, replay
from .writer import SpoolingWriter, processed_writer

logger = logging.getLogger(__name__)

#: Longest wait (s) for a replay's derived runs to be uploaded while the server answers.
UPLOAD_WAIT_S = 600.0


@dataclass(frozen=True)
class RunReplay:
    """The outcome of replaying one raw run (all a Dask task sends back: no documents).

    Attributes
    ----------
    raw_uid : str
        The raw run.
    runs : list of ReplayedRun
        The derived runs made (empty if it could not be replayed).
    error : str
        Why it could not be replayed, or why a derived run is not in the catalog
        (``""``: it was replayed and every derived run stored).
    """

    raw_uid: str
    runs: list[ReplayedRun]
    error: str = ""

    @property
    def failed(self) -> bool:
        """Whether it could not be replayed or a derived run did not succeed."""
        return bool(self.error) or any(r.exit_status != "success" for r in self.runs)

    @property
    def why(self) -> str:
        """Why it failed (``""`` if it did not)."""
        return self.error or "; ".join(f"{r.uid} {r.analysis} {r.exit_status or 'never stopped'}"
                                       + (f": {r.reason}" if r.reason else "")
                                       for r in self.runs if r.exit_status != "success")

    def as_dict(self) -> dict:
        """Plain data (strings and lists), as a Dask task returns it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunReplay:
        """The inverse of :meth:`as_dict`."""
        return cls(data["raw_uid"], [ReplayedRun(**r) for r in data["runs"]], data["error"])


def replay_one(catalog, uid: str, emit: Callable[[str, dict], None], **options) -> RunReplay:
    """Replay raw run ``uid`` of ``catalog`` here (``options`` as for
    :func:`~.replay.replay`), its documents to ``emit``: the runs made, or why it could
    not be replayed (a domain error, logged as a warning)."""
    try:
        return RunReplay(uid, replay(catalog, uid, emit=emit, **options))
    except XRDBlueskyError as exc:
        logger.warning("run %s not replayed: %s", uid, exc)
        return RunReplay(uid, [], f"{type(exc).__name__}: {exc}")


@contextmanager
def replay_writer(catalog) -> Iterator[SpoolingWriter]:
    """The processed writer of replayed runs, closed on exit once every document was
    handled (uploaded, or its run's upload abandoned on an error: the client's request
    timeouts bound that), at most :data:`UPLOAD_WAIT_S` (s). Unlike at a live run's
    end, a request slower than the writer's stall limit (a busy server) is waited for,
    since no scan waits for a replay."""
    writer = processed_writer(catalog)
    try:
        yield writer
    finally:
        deadline = time.monotonic() + UPLOAD_WAIT_S
        while not writer.flush(max(0.0, deadline - time.monotonic())) and time.monotonic() < deadline:
            time.sleep(0.2)  # flush gives up when a busy server misses its 1 s probe: wait on
        writer.close()


def checked_stored(catalog, outcome: RunReplay, spool_of: str) -> RunReplay:
    """``outcome`` once its writer is closed, with an error naming the derived runs that
    are not in ``catalog.processed`` with a stop document (their upload failed: their
    documents stay in the spool ``spool_of`` names, for ``xrd-bluesky sync``)."""
    missing = [r.uid for r in outcome.runs
               if (run := stored_run(catalog.processed, r.uid)) is None or run.metadata.get("stop") is None]
    if not missing or outcome.error:
        return outcome
    return RunReplay(outcome.raw_uid, outcome.runs, f"derived run(s) {', '.join(missing)} not stored in the catalog "
                                                    f"(upload failed: their documents are in the spool {spool_of}; "
                                                    "`xrd-bluesky sync` there when the catalog answers)")
