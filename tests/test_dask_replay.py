"""``xrd-bluesky replay --search ... --workers 2``: the runs replayed as Dask distributed
tasks on a LocalCluster, each worker reading its raw run from and writing its derived
runs to a served catalog on PostgreSQL itself. The derived runs equal those of the serial
replay in this process and of the live analysis; a run whose frames file is gone is
reported by name while the others succeed."""

from __future__ import annotations

import collections
import re
import secrets

import numpy as np
import pytest
from conftest import TEST_DETECTOR
from test_replay import assert_same_results, assert_same_start, derived_of

from xrd_bluesky.cli import main
from xrd_bluesky.cli.session import build_session
from xrd_bluesky.errors import UsageError
from xrd_bluesky.frames.hdf5 import path_from_uri
from xrd_bluesky.plans import multi_position_count
from xrd_bluesky.sim_devices import BeamlineConfig
from xrd_bluesky.store.parallel_replay import find_runs, replay_runs
from xrd_bluesky_bench.testing import (
    PostgresNotInstalledError,
    ServerProcess,
    TemporaryPostgres,
    postgres_bin_dir,
)

POSITIONS = [(0.0, 0.0, 300.0), (12.0, -8.0, 260.0)]
BATCH = {"batch": "dask replay"}

try:
    postgres_bin_dir()
except PostgresNotInstalledError as exc:  # .ci/run installs it; a user's machine may not have it
    pytestmark = pytest.mark.skip(reason=str(exc))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``xrd-bluesky serve`` on a throw-away PostgreSQL, its API key in TILED_API_KEY
    (which the workers inherit), and a session recording into it: (session, directory)."""
    directory = tmp_path_factory.mktemp("dask-served")
    key = secrets.token_hex(16)
    with pytest.MonkeyPatch.context() as mp, TemporaryPostgres() as pg, \
            ServerProcess(directory, key, database=pg.uri, startup_timeout_s=180) as server:
        mp.setenv("TILED_API_KEY", key)
        session = build_session(uri=server.uri, directory=directory,
                                config=BeamlineConfig(detector=TEST_DETECTOR, seed=7))
        yield session, directory
        session.close()


@pytest.fixture(scope="module")
def recorded(served):
    """Two measurement runs of the batch, integrated live, and a third whose frames
    file is then removed: (good raw uids, the broken raw uid)."""
    session, _ = served
    bl = session.beamline
    uids = []
    for slot in ("CeO2", "glass", "CeO2"):
        bl.sample_changer.slot.put(slot)
        uid, = session.RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, POSITIONS,
                                               shutter=bl.source.shutter, energy=bl.source.energy,
                                               sample=bl.sample_changer.sample().metadata(), md=BATCH))
        uids.append(uid)
    *good, broken = uids
    files = {uid: {path_from_uri(d["uri"]) for n, d in session.catalog.raw[uid].documents() if n == "stream_resource"}
             for uid in uids}
    assert all(files[broken].isdisjoint(files[uid]) for uid in good)  # removing them breaks that run only
    for path in files[broken]:
        path.unlink()
    return good, broken


def test_dask_replay_equals_serial_and_names_the_broken_run(served, recorded, capsys):
    """Each good run's derived run, written by a worker, records its raw run and the
    live run it redoes and equals the serial replay's (and the live one) within 1e-12
    relative; the broken run is named with its CorruptFrameError and counted as failed."""
    session, directory = served
    catalog = session.catalog
    good, broken = recorded
    assert main(["replay", "--search", "batch=dask replay", "--workers", "2", "--catalog", catalog.uri,
                 "--directory", str(directory)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"replaying 3 raw runs matching {BATCH} on 2 worker(s)"
    assert f"raw run {broken}: not replayed: CorruptFrameError" in out, out
    assert f"replayed 2 of 3 raw runs; 1 failed\n  failed {broken}: CorruptFrameError" in out, out
    on_dask = {}
    for uid in good:
        line = out.split(f"raw run {uid}:\n", 1)[1].splitlines()[0]
        derived_uid, analysis, *_, status = line.split()
        assert (analysis, status) == ("integration", "success"), line
        on_dask[uid] = catalog.processed[derived_uid]
    serial = {o.raw_uid: o for o in replay_runs(catalog, find_runs(catalog, BATCH))}
    assert serial[broken].error.startswith("CorruptFrameError") and not serial[broken].runs
    for uid in good:
        live, again = derived_of(catalog, uid, "integration"), on_dask[uid]
        assert again.start["parent_uids"] == [uid] and again.stop["exit_status"] == "success"
        assert_same_start(live, again)
        here = catalog.processed[serial[uid].runs[0].uid]
        assert assert_same_results(here, again) <= 1e-12
        assert assert_same_results(live, again) <= 1e-12


def test_the_embedded_catalog_is_refused_on_a_cluster_of_its_own(catalog):
    """Its server answers on this process's loopback only: a UsageError naming
    ``xrd-bluesky serve``, before any connection to the scheduler."""
    with pytest.raises(UsageError, match="xrd-bluesky serve"):
        replay_runs(catalog, ["0123456789abcdef"], scheduler="tcp://127.0.0.1:1")


def test_a_worker_replays_one_run_at_a_time_and_shares_its_preparations(served, recorded):
    """Tiled's client reads tables with dask; on a worker those reads must not go to the
    cluster, which would take the replay off the worker's thread and start the next run
    beside it (every run at once in one process, each building its own matrices). On a
    one-worker cluster the replays follow each other, and what the two positions need
    is kept once for every later worker of this machine: per position the beamstop's
    shadow and the pixels' normalization, and per position and unit (q, 2theta) the
    splitting matrix and the detector's coverage."""
    from distributed import get_task_stream

    from xrd_bluesky.store.dask_replay import dask_client, preparations_directory, replay_on_cluster

    session, directory = served
    catalog = session.catalog
    good, _ = recorded
    shared = preparations_directory(directory)
    for path in shared.glob("*"):
        path.unlink()
    with dask_client("local", 1) as client, get_task_stream(client) as stream:
        outcomes = replay_on_cluster(client, catalog, good)
    assert [o.error for o in outcomes] == ["", ""]
    spans = sorted((s["start"], s["stop"]) for task in stream.data if str(task["key"]).startswith("replay-")
                   for s in task["startstops"] if s["action"] == "compute")
    # the worker stamps a task's stop after its own bookkeeping: a few ms after the next may start
    assert len(spans) == 2 and spans[1][0] > spans[0][1] - 0.1, spans
    kinds = collections.Counter()
    for path in shared.glob("*.npz"):
        with np.load(path) as npz:
            kinds[re.match(r"\(\d+, '[^']*', \('([^']*)'", str(npz["key"])).group(1)] += 1  # (format, pyFAI, (kind
    n = len(POSITIONS)
    assert kinds == {"pixel splitting": 2 * n, "pixel normalization": n, "beamstop shadow": n,
                     "detector coverage": 2 * n}
