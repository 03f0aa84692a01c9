"""``xrd-bluesky bench replay``: ``replay --search`` on one and on several Dask workers,
each reading and writing a served catalog on PostgreSQL itself."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from contextlib import ExitStack

import numpy as np

from xrd_bluesky.sim_devices.beamline import BeamlineConfig

from .common import cpu_s, max_rel
from .integrate import MG_POSITIONS

#: The streams and data keys of an integration compared between replays.
COMPARED = (("primary", ("intensity_q", "sigma_q", "intensity_2theta", "sigma_2theta")),
            ("stitched", ("intensity", "sigma")))


def replay_speedup(runs: int = 8, workers: int = 2, num: int = 2, detector: str = "Pilatus2MCdTe") -> dict:
    """Re-processing stored runs with ``xrd-bluesky replay --search`` as Dask tasks: one
    worker against ``workers``, on the same runs of a served catalog.

    ``xrd-bluesky serve`` runs on a throw-away PostgreSQL (on its SQLite and DuckDB
    files when PostgreSQL is not installed). ``runs`` measurement runs (glass, ``num``
    exposures at three detector positions, integrated live) are recorded into it, then
    replayed serially in this process (the reference for the numbers) and on a
    LocalCluster of 1 and of ``workers`` worker processes, each worker reading its raw
    run from the server and writing its derived run there. Each cluster starts
    without the preparations its workers share on disk (matrices, shadows, coverages).

    Prints, per cluster size, the time of the replays (s; the cluster started and the
    package imported on its workers before, :data:`{label}_start_s`) and where the CPU
    goes (s): ``catalog_cpu_s`` is the Tiled server and PostgreSQL (``server_cpu_s``,
    ``postgres_cpu_s``), ``workers_cpu_s`` the worker processes (reading the raw runs,
    the analysis, writing), ``client_cpu_s`` this process (Dask's scheduler and
    client). All share the cores, so no schedule beats their sum over the cores
    (``cpu_bound_s``). Then ``speedup_{workers}_over_1`` (replays only, and
    ``..._with_start`` with the clusters' start), its ceiling (the one-worker time over
    the parallel ``cpu_bound_s``) and the largest relative difference between the
    parallel and the serial results (per-frame and stitched intensities and sigmas).
    """
    from xrd_bluesky.cli.session import build_session
    from xrd_bluesky.plans.counting import multi_position_count
    from xrd_bluesky.store.dask_replay import dask_client, preparations_directory, replay_on_cluster
    from xrd_bluesky.store.parallel_replay import find_runs, replay_runs
    from xrd_bluesky.store.server import API_KEY_VARIABLE

    from .testing import PostgresNotInstalledError, ServerProcess, TemporaryPostgres

    key = os.environ.setdefault(API_KEY_VARIABLE, secrets.token_hex(16))  # the workers inherit it
    out: dict[str, float | int | str] = {"detector": detector, "runs": runs, "workers": workers,
                                         "cpu_count": os.cpu_count() or 0}
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="xrd-bluesky-bench-"))
        try:
            pg = stack.enter_context(TemporaryPostgres())
        except PostgresNotInstalledError:
            pg = None
        out["database"] = "postgresql" if pg is not None else "sqlite+duckdb"
        server = stack.enter_context(ServerProcess(tmp, key, database=None if pg is None else pg.uri,
                                                   startup_timeout_s=180))
        session = build_session(directory=tmp, uri=server.uri, config=BeamlineConfig(detector=detector))
        stack.callback(session.close)
        bl = session.beamline
        bl.sample_changer.slot.put("glass")
        batch = {"batch": "bench replay"}
        for _ in range(runs):
            session.RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, MG_POSITIONS[:3], num=num,
                                            shutter=bl.source.shutter, energy=bl.source.energy,
                                            sample=bl.sample_changer.sample().metadata(), md=batch))
        catalog = session.catalog
        uids = find_runs(catalog, batch)
        t0 = time.perf_counter()
        results = {"serial": _derived(catalog, replay_runs(catalog, uids), "serial")}
        out["serial_in_process_s"] = time.perf_counter() - t0
        catalog_pids = {"server": server.process.pid, "postgres": None if pg is None else _postmaster(pg.directory)}
        timings = {}
        for n in (1, workers):
            label = f"dask{n}"
            shutil.rmtree(preparations_directory(catalog.spool_dir.parent), ignore_errors=True)  # each cluster cold
            t0 = time.perf_counter()
            with dask_client("local", n) as client:
                client.run(_import_replay)  # as the first task would
                out[f"{label}_start_s"] = time.perf_counter() - t0
                before = _cpu(client, catalog_pids)
                t1 = time.perf_counter()
                outcomes = replay_on_cluster(client, catalog, uids)
                timings[label] = time.perf_counter() - t1
                used = {k: after - before[k] for k, after in _cpu(client, catalog_pids).items()}
            timings[f"{label}_with_start"] = time.perf_counter() - t0
            results[label] = _derived(catalog, outcomes, label)
            out[f"{label}_s"] = timings[label]
            out[f"{label}_catalog_cpu_s"] = used["server"] + used["postgres"]
            for name, value in used.items():
                out[f"{label}_{name}_cpu_s"] = value
            out[f"{label}_cpu_bound_s"] = sum(used.values()) / out["cpu_count"]
        parallel = f"dask{workers}"
        out[f"speedup_{workers}_over_1"] = timings["dask1"] / timings[parallel]
        out[f"speedup_{workers}_over_1_with_start"] = timings["dask1_with_start"] / timings[f"{parallel}_with_start"]
        out["speedup_ceiling"] = timings["dask1"] / out[f"{parallel}_cpu_bound_s"]
        out["max_rel_diff_parallel_vs_serial"] = max(_max_rel_diff(results["serial"][uid], results[parallel][uid])
                                                     for uid in uids)
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


def _derived(catalog, outcomes, label: str) -> dict:
    """The derived run of each raw run replayed; RuntimeError naming the runs that failed."""
    failed = [(o.raw_uid, o.why) for o in outcomes if o.failed]
    if failed:
        raise RuntimeError(f"{label} replay failed: {failed}")
    return {o.raw_uid: catalog.processed[o.runs[0].uid] for o in outcomes}


def _max_rel_diff(reference, other) -> float:
    """Largest relative difference of ``other``'s intensities and sigmas from
    ``reference``'s (inf where they are not finite in the same bins)."""
    worst = 0.0
    for stream, keys in COMPARED:
        a, b = reference[stream].read(), other[stream].read()
        for key in keys:
            x, y = np.asarray(a[key], dtype=float), np.asarray(b[key], dtype=float)
            if not np.array_equal(np.isfinite(x), np.isfinite(y)):
                return np.inf
            both = np.isfinite(x) & (x != 0)
            worst = max(worst, max_rel(y, x, both) if both.any() else 0.0)
    return worst


def _import_replay() -> None:
    """Import what a replay task needs (on a worker)."""
    import xrd_bluesky.store.dask_replay  # noqa: F401


def _postmaster(directory) -> int:
    """The pid of the PostgreSQL server whose cluster is in ``directory``."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if any(str(directory) in part for part in command) and "-D" in command:
            return process.pid
    raise RuntimeError(f"no PostgreSQL server of {directory} runs")


def _cpu(client, catalog_pids: dict[str, int | None]) -> dict[str, float]:
    """CPU time (s, user + system) so far of the catalog's processes (each with its
    children), of the cluster's worker processes and of this process."""
    import psutil

    def tree_s(pid: int | None) -> float:
        if pid is None:
            return 0.0
        root = psutil.Process(pid)
        total = 0.0
        for process in (root, *root.children(recursive=True)):
            try:
                t = process.cpu_times()
            except psutil.NoSuchProcess:  # a PostgreSQL backend that just ended: its parent has its time
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    workers = sum(own for own, _ in client.run(cpu_s).values())
    return {**{name: tree_s(pid) for name, pid in catalog_pids.items()}, "workers": workers, "client": cpu_s()[0]}
