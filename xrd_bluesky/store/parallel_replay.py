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

from bluesky_tiled_plugins.clients.catalog_of_bluesky_runs import CatalogOfBlueskyRuns
from tiled.queries import Key

from ..errors import RunNotFoundError, UsageError
from ..schema.documents import check_uid
from ..schema.start import ANALYSIS_OF_PURPOSE
from .file_export import FileExporter
from .replay import RunCompletion, RunSource
from .replay_jobs import RunReplay, checked_stored, replay_one, replay_writer

logger = logging.getLogger(__name__)

def parse_search(terms: list[str]) -> dict[str, object]:
    """``["purpose=measurement", "sample.thickness_mm=1.0"]`` as a query: the value
    is read as JSON when it is (numbers, ``true``, ``null``, quoted strings), else
    taken as a string. Raises UsageError naming a term without ``=``."""
    query: dict[str, object] = {}
    for term in terms:
        key, sep, value = term.partition("=")
        if not sep or not key:
            raise UsageError(f"search term {term!r} is not KEY=VALUE")
        try:
            query[key] = json.loads(value)
        except json.JSONDecodeError:
            query[key] = value
    return query


def find_runs(catalog, query: dict[str, object], *, runs=None, purpose: str | None = None) -> list[str]:
    """The raw runs whose start documents match every ``KEY=VALUE`` of ``query``
    (dotted keys reach into nested metadata) and that have an analysis to replay,
    oldest first. Raises RunNotFoundError if none does.

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
        raise RunNotFoundError(f"no replayable raw run matches {query} "
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
        A uid is not a run uid (``UnsafeUidError``, before any run is replayed).
    UsageError
        ``workers`` is below 1, or Dask is asked for runs of another catalog, completed or exported, or for the
        embedded catalog on a scheduler of its own (see :mod:`.dask_replay`).
    """
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
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


def _replay_here(catalog, uids: list[str], exporter: FileExporter | None, **options) -> list[RunReplay]:
    """Replay ``uids`` one after the other in this process through one processed writer
    (and ``exporter``)."""
    with replay_writer(catalog) as writer:
        emit = writer if exporter is None else lambda name, doc: (writer(name, doc), exporter(name, doc))
        outcomes = [replay_one(catalog, uid, emit, **options) for uid in uids]
    return [checked_stored(catalog, outcome, str(catalog.spool_dir)) for outcome in outcomes]
