"""``xrd-bluesky bench writes``: requests and CPU per derived run written into a served catalog."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import numpy as np

from xrd_bluesky.sim_devices.beamline import BeamlineConfig

from .common import RequestCounter
from .integrate import MG_POSITIONS

#: The container the old write path writes into, beside ``processed`` on the same server.
REFERENCE_CONTAINER = "processed_reference"
#: The container derived runs written whole node by node from the client (the path for a
#: stock Tiled server) go into, beside ``processed``.
CLIENT_WHOLE_RUN_CONTAINER = "processed_client_whole_run"
#: The write paths compared: the new one (the bulk write endpoint), the client-side
#: whole-run one and the old one, and the prefix of their numbers.
PATHS = {"new": "", "client_whole_run": "client_whole_run_", "old": "old_"}


def writes(runs: int = 8, num: int = 4, database: str = "sqlite", detector: str = "Pilatus2MCdTe") -> dict:
    """What writing the derived runs of a replay into a served catalog costs, on the
    new write path and on the previous ones, side by side.

    Records ``runs`` measurement runs (glass, ``num`` exposures at three detector
    positions, live integration) into a catalog served by ``xrd-bluesky serve`` (a
    child process; ``database="postgresql"``: on a temporary PostgreSQL server),
    replays each one (:func:`~xrd_bluesky.store.replay.replay`) and writes the
    documents of its derived runs three times: into ``processed`` by the catalog's
    processed writer (the new path: one request to the server's bulk write endpoint),
    into ``processed_client_whole_run`` by the same writer without the endpoint (each
    run written whole at its stop, node by node, as into a stock Tiled server) and into
    ``processed_reference`` by the old path (a spooling writer streaming into
    bluesky-tiled-plugins' ``TiledWriter``, every node closed on its own), rotating which
    goes first. Per derived run it prints the HTTP requests, the server process's CPU
    (s, psutil) and this process's CPU (s) of each path, the ratios of the old path's
    to the new one's, and whether every derived run reads back the same from the three
    containers (start, stop, descriptors, every stream and key, the run's documents)
    and holds the values the analysis emitted (``stored_content_equal``).
    """
    import secrets
    import tempfile

    from xrd_bluesky.store.server import API_KEY_VARIABLE

    key = os.environ.setdefault(API_KEY_VARIABLE, secrets.token_hex(16))
    out: dict[str, float | int | str | bool] = {"database": database, "runs": runs, "num": num}
    with tempfile.TemporaryDirectory(prefix="xrd-bluesky-bench-writes-") as tmp, _database(database) as uri:
        from .testing import ServerProcess

        with ServerProcess(tmp, key, database=uri, startup_timeout_s=300) as server:
            out.update(_measure(server, tmp, runs, num, detector))
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


@contextlib.contextmanager
def _database(database: str):
    """The catalog database URI the server gets (None: SQLite in the data directory);
    a PostgreSQL cluster lives in a directory of its own, which its ``postgres`` user
    can reach when this process is root."""
    if database == "sqlite":
        yield None
    elif database == "postgresql":
        from .testing import TemporaryPostgres

        with TemporaryPostgres() as postgres:
            yield postgres.uri
    else:
        raise ValueError(f"database is sqlite or postgresql, not {database!r}")


def _measure(server, tmp: str, runs: int, num: int, detector: str) -> dict:
    """Record, replay and write both ways; the numbers per derived run."""
    import psutil

    from xrd_bluesky.errors import XRDBlueskyError
    from xrd_bluesky.store import open_catalog
    from xrd_bluesky.store.catalog import _RUN_CATALOG_SPEC
    from xrd_bluesky.store.writer import SpoolingWriter, processed_writer

    batch = {"batch": "bench writes"}
    _record(server.uri, tmp, runs, num, detector, batch)
    catalog = open_catalog(server.uri, directory=tmp)
    for container in (REFERENCE_CONTAINER, CLIENT_WHOLE_RUN_CONTAINER):
        catalog.client.create_container(container, specs=[_RUN_CATALOG_SPEC])
    reference, whole = catalog.client[REFERENCE_CONTAINER], catalog.client[CLIENT_WHOLE_RUN_CONTAINER]
    counter = RequestCounter(catalog.client)
    server_process = psutil.Process(server.process.pid)
    writers = {"new": processed_writer(catalog),
               "client_whole_run": SpoolingWriter(whole, catalog.spool_dir / CLIENT_WHOLE_RUN_CONTAINER,
                                                  upload_lock=catalog.upload_lock, whole_runs=True, bulk=False),
               "old": SpoolingWriter(reference, catalog.spool_dir / REFERENCE_CONTAINER, batch_size=OLD_BATCH_SIZE,
                                     upload_lock=catalog.upload_lock)}
    totals = {f"{path}_{what}": 0.0 for path in PATHS for what in ("requests", "server_cpu_s", "client_cpu_s")}
    emitted: dict[str, list[tuple[str, dict]]] = {}
    skipped = 0
    try:
        for i, uid in enumerate(_replayable(catalog, batch)):
            try:
                documents = _replayed_documents(catalog, uid)
            except XRDBlueskyError as exc:  # e.g. its live analysis could not start: no geometry recorded
                print(f"run {uid} not replayed: {exc}")
                skipped += 1
                continue
            emitted.update(_by_run(documents))
            order = list(PATHS)[i % len(PATHS):] + list(PATHS)[:i % len(PATHS)]
            for path in order:
                for name, value in _cost(writers[path], documents, counter, server_process).items():
                    totals[f"{path}_{name}"] += value
    finally:
        for writer in writers.values():
            writer.close()
    derived = len(emitted)
    out: dict[str, float | int | bool] = {"raw_runs_not_replayed": skipped, "derived_runs": derived}
    for name in ("requests", "server_cpu_s", "client_cpu_s"):
        for path, prefix in PATHS.items():
            out[f"{prefix}{name}_per_derived_run"] = totals[f"{path}_{name}"] / derived
        out[f"{name}_ratio_old_over_new"] = totals[f"old_{name}"] / max(totals[f"new_{name}"], 1e-9)
    unequal = [uid for uid, docs in emitted.items()
               if not (stored_equal(catalog.processed[uid], reference[uid], docs)
                       and stored_equal(catalog.processed[uid], whole[uid], docs))]
    out["unequal_runs"] = len(unequal)
    out["stored_content_equal"] = not unequal
    return out


#: Events per write of the old path's replays (they were written at the run's stop).
OLD_BATCH_SIZE = 100_000


def _record(uri: str, tmp: str, runs: int, num: int, detector: str, md: dict) -> None:
    """Record ``runs`` measurement runs of glass with live integration (which records
    the geometry a replay needs) into the catalog at ``uri``."""
    from xrd_bluesky.cli.session import build_session
    from xrd_bluesky.plans.counting import multi_position_count

    session = build_session(directory=tmp, uri=uri, config=BeamlineConfig(detector=detector))
    try:
        bl = session.beamline
        bl.sample_changer.slot.put("glass")
        for _ in range(runs):
            session.RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, MG_POSITIONS[:3], num=num,
                                            shutter=bl.source.shutter, energy=bl.source.energy,
                                            sample=bl.sample_changer.sample().metadata(), md=md))
    finally:
        session.close()


def _replayable(catalog, md: dict) -> list[str]:
    from xrd_bluesky.store.parallel_replay import find_runs

    return find_runs(catalog, md)


def _replayed_documents(catalog, uid: str) -> list[tuple[str, dict]]:
    """The documents of the derived runs a replay of raw run ``uid`` makes (as the
    spool keeps them: each one encoded and decoded again, so nothing is shared)."""
    from xrd_bluesky.store.replay import replay
    from xrd_bluesky.store.spool import decode, encode

    lines: list[bytes] = []
    replay(catalog, uid, emit=lambda name, doc: lines.append(encode(name, doc)))
    return [decode(line) for line in lines]


def _by_run(documents: list[tuple[str, dict]]) -> dict[str, list[tuple[str, dict]]]:
    """``documents`` per derived run uid."""
    runs: dict[str, list] = {}
    run_of: dict[str, str] = {}
    for name, doc in documents:
        uid = doc["uid"] if name == "start" else doc.get("run_start") or run_of[doc["descriptor"]]
        if name == "descriptor":
            run_of[doc["uid"]] = uid
        runs.setdefault(uid, []).append((name, doc))
    return runs


def _cost(writer: Callable[[str, dict], None], documents, counter: RequestCounter, server_process) -> dict:
    """Write ``documents`` (whole runs) with ``writer``, waiting for each run's upload:
    the requests, the server's CPU (s) and this process's CPU (s) it took."""
    requests, server, client = counter.count, sum(server_process.cpu_times()[:2]), time.process_time()
    for name, doc in documents:
        writer(name, doc)
    if not writer.flush():
        raise RuntimeError("a derived run was not uploaded (see the log)")
    return {"requests": counter.count - requests, "server_cpu_s": sum(server_process.cpu_times()[:2]) - server,
            "client_cpu_s": time.process_time() - client}


def stored_equal(run, reference, documents: list[tuple[str, dict]]) -> bool:
    """Whether derived run ``run`` reads back as ``reference`` does (start, stop, the
    whole metadata, descriptors, every stream's data, its documents) and holds the
    data the analysis emitted in ``documents`` (each event's value of every key)."""
    from xrd_bluesky.sources.catalog_run import run_documents

    if _with_sorted_notes(run.metadata) != _with_sorted_notes(reference.metadata) or set(run) != set(reference):
        return False
    for stream in run:
        ours, theirs = run[stream], reference[stream]
        if ours.descriptors != theirs.descriptors or not ours.read().identical(theirs.read()):
            return False
    if _plain(list(run_documents(run))) != _plain(list(run_documents(reference))):
        return False
    return holds_emitted(run, documents)


def _with_sorted_notes(metadata) -> dict:
    """A run's metadata with its writer's ``notes`` sorted: ``TiledWriter`` notes its
    arrays in the order it iterates a set of their keys, which differs from one Python
    process to another (string hashing), so the order is no part of the content."""
    metadata = dict(metadata)
    if "notes" in metadata:
        metadata["notes"] = sorted(metadata["notes"])
    return metadata


def holds_emitted(run, documents: list[tuple[str, dict]]) -> bool:
    """Whether every event the analysis emitted in ``documents`` is stored in ``run``:
    its stream's row of the same ``seq_num`` holds each value (arrays bin by bin; NaN
    where NaN was emitted), and the start and stop documents are stored as emitted."""
    start = next(doc for name, doc in documents if name == "start")
    stop = next(doc for name, doc in documents if name == "stop")
    if run.metadata["start"] != start or {k: v for k, v in run.metadata["stop"].items()} != stop:
        return False
    streams = {doc["uid"]: doc["name"] for name, doc in documents if name == "descriptor"}
    data = {stream: run[stream].read() for stream in set(streams.values())}
    for name, doc in documents:
        if name != "event":
            continue
        table = data[streams[doc["descriptor"]]]
        row = int(np.flatnonzero(np.asarray(table["seq_num"]) == doc["seq_num"])[0]) if "seq_num" in table else \
            doc["seq_num"] - 1
        for key, value in doc["data"].items():
            if not _same(np.asarray(table[key][row]), np.asarray(value)):
                return False
    return True


def _same(stored: np.ndarray, emitted: np.ndarray) -> bool:
    """Whether a stored value is the emitted one (numbers: NaN where NaN was emitted)."""
    if stored.dtype.kind == "f" and emitted.dtype.kind in "iuf":
        return stored.shape == emitted.shape and bool(np.array_equal(stored, emitted, equal_nan=True))
    return stored.shape == emitted.shape and stored.tolist() == emitted.tolist()


def _plain(documents: list[tuple[str, dict]]) -> list:
    """Documents with arrays as lists, so that two lists of them compare with ``==``."""
    import json

    return json.loads(json.dumps(documents, default=lambda x: np.asarray(x).tolist()))
