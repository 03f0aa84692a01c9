"""Replay many stored raw runs (``xrd-bluesky replay --search KEY=VALUE``): one after the
other in this process, or as Dask distributed tasks (``--workers N``, ``--scheduler
ADDRESS``: :mod:`.dask_replay`).

In this process every run goes through :func:`~.replay.replay` and one processed writer;
on Dask each worker reads its raw run from the served catalog and writes its derived
runs there itself. Either way a derived run counts as made only once it is stored with
its stop document, and a run that cannot be replayed is reported with its reason while
the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from bluesky_tiled_plugins.clients.catalog_of_bluesky_runs import CatalogOfBlueskyRuns
from tiled.queries import Key

from ..errors import MissingMetadataError, UsageError, XRDBlueskyError
from ..schema.documents import check_uid
from .catalog import stored_run
from .file_export import FileExporter
from .replay import ANALYSIS_OF_PURPOSE, ReplayedRun, RunCompletion, RunSource, replay
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
    def from_dict(cls, data: dict) -> "RunReplay":
        """The inverse of :meth:`as_dict`."""
        return cls(data["raw_uid"], [ReplayedRun(**r) for r in data["runs"]], data["error"])


def parse_search(terms: list[str]) -> dict[str, object]:
    """``["purpose=measurement", "sample.thickness_mm=1.0"]`` as a query: the value
    is read as JSON when it is (numbers, ``true``, ``null``, quoted strings), else
    taken as a string. Raises MissingMetadataError naming a term without ``=``."""
    query: dict[str, object] = {}
    for term in terms:
        key, sep, value = term.partition("=")
        if not sep or not key:
            raise MissingMetadataError(f"search term {term!r} is not KEY=VALUE")
        try:
            query[key] = json.loads(value)
        except json.JSONDecodeError:
            query[key] = value
    return query


def find_runs(catalog, query: dict[str, object], *, runs=None, purpose: str | None = None) -> list[str]:
    """The raw runs whose start documents match every ``KEY=VALUE`` of ``query``
    (dotted keys reach into nested metadata) and that have an analysis to replay,
    oldest first. Raises MissingMetadataError if none does.

    Parameters
    ----------
    catalog : Catalog
        Its ``raw`` container is searched, unless ``runs`` is given.
    query : dict
        Metadata keys and values.
    runs : tiled Container, optional
        Another catalog's runs (its root or a container).
    purpose : str, optional
        The purpose of runs whose start document has none (runs recorded by other software).
    """
    found = catalog.raw if runs is None else runs
    # a catalog of Bluesky runs searches start documents; any other container, its nodes' whole metadata
    prefix = "" if isinstance(found, CatalogOfBlueskyRuns) else "start."
    for key, value in query.items():
        found = found.search(Key(key if key.startswith(("start.", "stop.")) else prefix + key) == value)
    def replayed_as(run) -> str | None:  # a run that records another purpose than the one given is left out
        recorded = run.metadata.get("start", {}).get("purpose")
        return purpose if recorded is None else recorded if purpose in (None, recorded) else None

    uids = [uid for uid, run in found.items() if replayed_as(run) in ANALYSIS_OF_PURPOSE]
    if not uids:
        raise MissingMetadataError(f"no replayable raw run matches {query} "
                                   f"(replayable purposes: {', '.join(ANALYSIS_OF_PURPOSE)})")
    return uids


def replay_runs(catalog, uids: list[str], *, workers: int | None = None, scheduler: str | None = None,
                calibration_uid: str | None = None, gain_map_uid: str | None = None, source: RunSource | None = None,
                completion: RunCompletion = RunCompletion(), exporter: FileExporter | None = None) -> list[RunReplay]:
    """Replay the raw runs ``uids``: one after the other in this process (no scheduler
    and at most one worker), else as Dask distributed tasks (see :mod:`.dask_replay`).

    Parameters
    ----------
    catalog : Catalog
        The catalog (embedded or served) receiving the derived runs, and holding the
        raw runs unless ``source`` is given.
    uids : list of str
        Raw runs to replay (see :func:`find_runs`).
    workers : int, optional
        None or 1 without ``scheduler``: here, serially. More: a
        ``distributed.LocalCluster`` of that many worker processes (1 thread each), as
        with ``scheduler="local"`` (default there: one per core).
    scheduler : str, optional
        ``"local"`` (a LocalCluster of ``workers``) or the address of a running Dask
        scheduler (``tcp://host:port``; ``workers`` must then be None), whose workers
        must reach the catalog by its URI: not the embedded one, which this process
        serves on loopback only.
    calibration_uid, gain_map_uid : str, optional
        Overrides for every run, as in :func:`~.replay.replay`.
    source, completion : optional
        Runs of another catalog and what they lack, as in :func:`~.replay.replay`
        (here only).
    exporter : FileExporter, optional
        Also writes every derived run as files (here only).

    Returns
    -------
    list of RunReplay
        One per raw run, in the order of ``uids``; the integration kernels' sums may
        differ by rounding (about 1e-15 relative) between paths and numbers of workers.

    Raises
    ------
    MissingMetadataError
        ``workers`` is below 1, or a uid is not a run uid (``UnsafeUidError``, before
        any run is replayed).
    UsageError
        Dask is asked for runs of another catalog, completed or exported, or for the
        embedded catalog on a scheduler of its own (see :mod:`.dask_replay`).
    """
    if workers is not None and workers < 1:
        raise MissingMetadataError(f"--workers must be at least 1, not {workers}")
    for uid in uids:
        check_uid(uid, "raw run uid")
    for value, what in ((calibration_uid, "calibration uid"), (gain_map_uid, "gain map uid")):
        if value is not None:
            check_uid(value, what)
    if scheduler is None and workers in (None, 1):
        return _replay_here(catalog, uids, exporter, calibration_uid=calibration_uid, gain_map_uid=gain_map_uid,
                            source=source, completion=completion)
    if source is not None or exporter is not None or completion.given:
        raise UsageError("--workers and --scheduler replay runs of this package's catalog without further options: "
                         "runs of another catalog, completed or exported, are replayed one after the other here "
                         "(omit --workers and --scheduler)")
    from .dask_replay import LOCAL, check_reachable, dask_client, replay_on_cluster

    check_reachable(catalog, local=scheduler in (None, LOCAL))  # before any connection
    with dask_client(scheduler or LOCAL, workers) as client:
        return replay_on_cluster(client, catalog, uids, calibration_uid=calibration_uid, gain_map_uid=gain_map_uid)


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


def _replay_here(catalog, uids: list[str], exporter: FileExporter | None, **options) -> list[RunReplay]:
    """Replay ``uids`` one after the other in this process through one processed writer
    (and ``exporter``)."""
    with replay_writer(catalog) as writer:
        emit = writer if exporter is None else lambda name, doc: (writer(name, doc), exporter(name, doc))
        outcomes = [replay_one(catalog, uid, emit, **options) for uid in uids]
    return [checked_stored(catalog, outcome, str(catalog.spool_dir)) for outcome in outcomes]
