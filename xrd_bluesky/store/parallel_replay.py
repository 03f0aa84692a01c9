"""Replay many stored raw runs across worker processes
(``xrd-bluesky replay --search KEY=VALUE --workers N``).

Each worker process opens the catalog by its URI (the embedded server answers on
loopback too) and replays whole runs with :func:`~.replay.replay`, the same code as a
single replay. The documents of the derived runs it makes come back to the calling
process as spool lines (:mod:`.spool`: JSON, never pickle) and go through the caller's
one processed writer. Writes therefore never run concurrently, whatever the server's
table store, and a result is spooled before it is uploaded. A run that cannot be
replayed is reported with its reason; the others go on.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from bluesky_tiled_plugins.clients.catalog_of_bluesky_runs import CatalogOfBlueskyRuns
from tiled.queries import Key

from ..errors import MissingMetadataError, XRDBlueskyError
from ..sources.documents import check_uid
from .replay import ANALYSIS_OF_PURPOSE, ReplayedRun, replay
from .spool import decode, encode
from .writer import processed_writer

logger = logging.getLogger(__name__)

#: Events per write of replayed runs: they arrive whole, so each stream is written in
#: one request per data key at the run's stop (no one waits for them live).
REPLAY_BATCH_SIZE = 100_000


@dataclass(frozen=True)
class RunReplay:
    """The outcome of replaying one raw run.

    Attributes
    ----------
    raw_uid : str
        The raw run.
    runs : list of ReplayedRun
        The derived runs made (empty if it failed).
    error : str
        Why it could not be replayed (``""`` if it was).
    """

    raw_uid: str
    runs: list[ReplayedRun]
    error: str = ""


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


def replay_runs(catalog, uids: list[str], *, workers: int = 1, calibration_uid: str | None = None,
                gain_map_uid: str | None = None) -> list[RunReplay]:
    """Replay the raw runs ``uids`` of ``catalog`` on ``workers`` worker processes.

    Each worker takes the next run as soon as it is free; with one worker the runs are
    replayed one after the other (serially), in a fresh process as with several.

    Parameters
    ----------
    catalog : Catalog
        The catalog (embedded or served); its processed writer writes every result.
    uids : list of str
        Raw runs to replay (see :func:`find_runs`).
    workers : int
        Worker processes. Each gets ``cpu_count // workers`` (at least 1) threads for
        the integration kernels, so the floating-point sums of a pattern can differ
        by rounding (about 1e-15 relative) between different numbers of workers.
    calibration_uid, gain_map_uid : str, optional
        Overrides for every run, as in :func:`~.replay.replay`.

    Returns
    -------
    list of RunReplay
        One per raw run, in the order of ``uids``.

    Raises
    ------
    MissingMetadataError
        ``workers`` is below 1, or a uid is not a run uid (``UnsafeUidError``, before
        any run is replayed).
    """
    if workers < 1:
        raise MissingMetadataError(f"--workers must be at least 1, not {workers}")
    for uid in uids:
        check_uid(uid, "raw run uid")
    for value, what in ((calibration_uid, "calibration uid"), (gain_map_uid, "gain map uid")):
        if value is not None:
            check_uid(value, what)
    export_dir = None if catalog.frames_dir is None else str(catalog.frames_dir.parent)
    threads = max(1, (os.cpu_count() or 1) // workers)
    writer = processed_writer(catalog, batch_size=REPLAY_BATCH_SIZE)
    outcomes: dict[str, RunReplay] = {}
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(catalog.uri, threads)) as pool:
            futures = {pool.submit(_replay_in_worker, uid, calibration_uid, gain_map_uid, export_dir): uid
                       for uid in uids}
            for future in as_completed(futures):
                uid = futures[future]
                runs, lines, error = future.result()
                for line in lines:
                    writer(*decode(line))
                outcomes[uid] = RunReplay(uid, [ReplayedRun(**r) for r in runs], error)
    finally:
        writer.close()
    return [outcomes[uid] for uid in uids]


# -- in the worker processes ---------------------------------------------------------

_worker_catalog = None


def _start_worker(uri: str, threads: int) -> None:
    """Open the catalog once per worker process; give it ``threads`` numba threads."""
    import numba

    from .catalog import open_catalog

    global _worker_catalog
    numba.set_num_threads(threads)
    if "api_key=" in uri:  # the embedded server's URI carries its key: the environment's would clash
        os.environ.pop("TILED_API_KEY", None)
    _worker_catalog = open_catalog(uri)


def _replay_in_worker(uid: str, calibration_uid: str | None, gain_map_uid: str | None,
                      export_dir: str | None) -> tuple[list[dict], list[bytes], str]:
    """Replay ``uid`` in this worker: the runs made (as dicts), their documents as
    spool lines, and the error if it could not be replayed."""
    lines: list[bytes] = []
    try:
        runs = replay(_worker_catalog, uid, calibration_uid=calibration_uid, gain_map_uid=gain_map_uid,
                      emit=lambda name, doc: lines.append(encode(name, doc)),
                      export_dir=None if export_dir is None else Path(export_dir))
    except XRDBlueskyError as exc:
        logger.warning("run %s not replayed: %s", uid, exc)
        return [], [], f"{type(exc).__name__}: {exc}"
    return [asdict(r) for r in runs], lines, ""
