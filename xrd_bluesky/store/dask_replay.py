"""Replay many stored raw runs as Dask distributed tasks (``xrd-bluesky replay --search
KEY=VALUE --workers N`` or ``--scheduler ADDRESS``).

One task replays one whole raw run on a Dask worker. The worker opens the catalog by
its URI (:func:`~.catalog.open_catalog`: the API key from the worker's own
``TILED_API_KEY``, or carried by an embedded server's URI), reads the raw run, runs the
analyses (:func:`~.replay.replay`), writes the derived runs with its own processed
writer and checks that they are stored. Only a summary comes back (per derived run its
uid, analysis, status and reason, or why the run could not be replayed): no documents
or arrays travel through Dask, and nothing but that summary is pickled. A run that
fails, on a worker that dies included, is reported by name; the others go on.

The workers of one machine share what they prepare per geometry: pixel-splitting
matrices, beamstop shadows, detector coverages (:func:`preparations_directory`,
:mod:`~xrd_bluesky.science.reduction.shared_preparations`). Each is computed once
between them, those of every position a run plans divided between the workers at its
start, not once per worker. A worker replays one run at a time: the dask reads of Tiled's client run
inside the task, not on the cluster.

``--scheduler local`` (or ``--workers N`` alone) starts a ``distributed.LocalCluster``
of N worker processes with one thread each on this machine; ``--scheduler
tcp://host:port`` uses a running cluster, whose workers must have this package
installed and reach the catalog's URI. The catalog's server takes the workers' writes
concurrently: ``xrd-bluesky serve`` does (PostgreSQL, or DuckDB, whose table access it
serializes), and so does the embedded catalog, which this process serves on loopback
only: a LocalCluster's workers use it, a cluster of its own cannot (UsageError: serve
the directory with ``xrd-bluesky serve`` and give ``--catalog URI``).
"""

from __future__ import annotations

import functools
import logging
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError, XRDBlueskyError
from ..science.reduction.shared_preparations import share_preparations
from .catalog import data_directory, open_catalog
from .replay_jobs import RunReplay, checked_stored, replay_one, replay_writer

logger = logging.getLogger(__name__)

#: ``--scheduler`` value that starts a LocalCluster.
LOCAL = "local"
#: Longest wait (s) for a running scheduler to answer.
CONNECT_TIMEOUT_S = 10.0


class SchedulerUnavailableError(XRDBlueskyError, ConnectionError):
    """The Dask scheduler does not answer."""


def check_scheduler(scheduler: str) -> str:
    """``scheduler`` after checking that it is ``local`` or a scheduler address
    (``tcp://host:port``, or another of Dask's protocols); UsageError naming it if not."""
    if scheduler == LOCAL:
        return scheduler
    try:
        parts = urllib.parse.urlsplit(scheduler)
        valid = bool(parts.scheme) and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number from 0 to 65535
        valid = False
    if not valid:
        raise UsageError(f"--scheduler {scheduler!r} is neither 'local' nor a Dask scheduler address "
                         "(tcp://host:port)")
    return scheduler


def check_reachable(catalog, local: bool) -> bool:
    """Whether ``catalog`` is the embedded one, after checking that the workers of a
    cluster (``local``: a LocalCluster) can reach it.

    Raises
    ------
    UsageError
        The embedded catalog, which this process serves on loopback only, with a
        cluster that is not a LocalCluster.
    """
    embedded = catalog.frames_dir is not None
    if embedded and not local:
        raise UsageError("the embedded catalog is served by this process on loopback only: the workers of the "
                         "cluster at --scheduler cannot reach it. Serve its directory (`xrd-bluesky serve "
                         "--directory D`) and give --catalog URI, or use --workers N (a local cluster)")
    return embedded


@contextmanager
def dask_client(scheduler: str, workers: int | None = None) -> Iterator:
    """A ``distributed.Client`` of a new LocalCluster (``scheduler="local"``: ``workers``
    processes, default one per core, one thread each) or of the running scheduler at
    ``scheduler``; the LocalCluster is shut down on exit.

    Raises
    ------
    UsageError
        ``scheduler`` is no address (see :func:`check_scheduler`), or ``workers`` is
        given with a running cluster's address (it has the workers it has).
    SchedulerUnavailableError
        The scheduler does not answer within :data:`CONNECT_TIMEOUT_S`.
    """
    from distributed import Client, LocalCluster

    if check_scheduler(scheduler) == LOCAL:
        n = workers or os.cpu_count() or 1
        # no dashboard; the scheduler's HTTP routes (health) on a free loopback port, not on 8787 of every address
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, Client(cluster) as client:
            yield client
        return
    if workers is not None:
        raise UsageError(f"--workers sizes a local cluster; the cluster at {scheduler} has the workers it has "
                         "(omit --workers)")
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:  # refused, unknown host, timed out
        raise SchedulerUnavailableError(f"the Dask scheduler at {scheduler} does not answer ({exc}): is it "
                                        "running and the address right?") from None
    with client:
        yield client


def replay_on_cluster(client, catalog, uids: list[str], *, calibration_uid: str | None = None,
                      gain_map_uid: str | None = None) -> list[RunReplay]:
    """Replay the raw runs ``uids`` of ``catalog`` as one task each on the workers of
    ``client``, as they become free.

    Parameters
    ----------
    client : distributed.Client
        Of a LocalCluster (see :func:`dask_client`), or of any running cluster.
    catalog : Catalog
        A served catalog, or the embedded one on a LocalCluster.
    uids : list of str
        Checked raw run uids.
    calibration_uid, gain_map_uid : str, optional
        Overrides for every run, as in :func:`~.replay.replay`.

    Returns
    -------
    list of RunReplay
        One per raw run, in the order of ``uids``; an exception a task raised, or a
        worker's death, becomes that run's error.

    Raises
    ------
    UsageError
        ``catalog`` is the embedded one and the cluster is not a LocalCluster.
    """
    from distributed import LocalCluster, as_completed

    local = isinstance(client.cluster, LocalCluster)
    embedded = check_reachable(catalog, local)
    task = functools.partial(
        replay_task, catalog.uri, calibration_uid=calibration_uid, gain_map_uid=gain_map_uid,
        directory=str(catalog.spool_dir.parent) if local else None,
        export_dir=str(catalog.frames_dir.parent) if embedded else None,
        threads=max(1, (os.cpu_count() or 1) // len(client.cluster.workers)) if local else None)
    batch = uuid.uuid4().hex[:8]
    futures = {client.submit(task, uid, key=f"replay-{uid}-{batch}", pure=False): uid for uid in uids}
    outcomes: dict[str, RunReplay] = {}
    for future in as_completed(futures):
        uid = futures[future]
        try:
            outcomes[uid] = RunReplay.from_dict(future.result())
        except Exception as exc:  # a bug, a worker that died, a lost scheduler: this run only
            logger.warning("run %s not replayed: %s: %s", uid, type(exc).__name__, exc)
            outcomes[uid] = RunReplay(uid, [], f"{type(exc).__name__}: {exc}")
        future.release()
    return [outcomes[uid] for uid in uids]


# -- on the workers ----------------------------------------------------------------------
def replay_task(catalog_uri: str, uid: str, *, calibration_uid: str | None, gain_map_uid: str | None,
                directory: str | None, export_dir: str | None, threads: int | None) -> dict:
    """Replay raw run ``uid`` on this worker into the catalog at ``catalog_uri``.

    Parameters
    ----------
    catalog_uri : str
        The catalog's URI (the API key from ``TILED_API_KEY`` unless the URI has one).
    uid : str
        The raw run.
    calibration_uid, gain_map_uid : str or None
        As in :func:`~.replay.replay`.
    directory : str or None
        Data directory holding the spool of derived runs whose upload fails and the
        preparations the workers of this machine share
        (:func:`preparations_directory`; None: the worker's default,
        :func:`~.catalog.data_directory`).
    export_dir : str or None
        Where replayed calibrations and gain maps export their files (None: nowhere).
    threads : int or None
        Numba threads for the integration kernels (None: numba's default).

    Returns
    -------
    dict
        :meth:`RunReplay.as_dict` of the outcome (a domain error is its ``error``,
        which names this worker).
    """
    if threads is not None:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    import dask

    _share_preparations(str(preparations_directory(directory)))
    catalog = _catalog(catalog_uri, directory)
    # Tiled's client reads tables with dask: on a worker that would hand the reads to the
    # cluster and take this task off its thread, so the worker would start its next run
    # meanwhile, and every run would go on at once in one process.
    with dask.config.set(scheduler="synchronous"):
        with replay_writer(catalog) as writer:
            outcome = replay_one(catalog, uid, writer, calibration_uid=calibration_uid, gain_map_uid=gain_map_uid,
                                 export_dir=export_dir)
        outcome = checked_stored(catalog, outcome, str(catalog.spool_dir))
    if outcome.error:
        outcome = RunReplay(outcome.raw_uid, outcome.runs, f"{outcome.error} (on worker {_worker_address()})")
    return outcome.as_dict()


def preparations_directory(directory: str | Path | None) -> Path:
    """Where the workers of one machine share what they prepare per geometry: ``cache/
    preparations`` in the data directory ``directory`` (None: the default,
    :func:`~.catalog.data_directory`)."""
    return (Path(directory) if directory is not None else data_directory()) / "cache" / "preparations"


@functools.cache
def _share_preparations(directory: str) -> None:
    """Share this worker's preparations in ``directory`` (once per worker)."""
    share_preparations(directory)


@functools.cache
def _catalog(uri: str, directory: str | None):
    """The catalog at ``uri``, opened once per worker process."""
    return open_catalog(uri, directory=directory)


def _worker_address() -> str:
    from distributed import get_worker

    return get_worker().address
