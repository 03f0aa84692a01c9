"""Run-start lookups (current calibration, gain map, a run's integration) in a catalog of
many runs: the newest successful live run, of the given detector, passing over failed
runs, replays and unfinished runs, found by reading only the runs added since the last
lookup.

Runs are written in the layout TiledWriter gives them (a BlueskyRun container whose
metadata holds the start and stop documents); the expected answer comes from the list
of runs as written (insertion order), independently of the catalog.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from tiled.structures.core import Spec

from xrd_bluesky.store import open_catalog
from xrd_bluesky.store.derived_runs import (
    ANCHORS,
    FIRST_PAGE,
    LiveRunIndex,
    current_derived_of,
    current_run,
)
from xrd_bluesky.store.gain_maps import latest_gain_map_uid
from xrd_bluesky.store.lineage import REPLAY_KEY
from xrd_bluesky_bench.common import RequestCounter

ANALYSES = ("calibration", "gain_map", "integration")
DETECTORS = ("det", "det2")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    catalog = open_catalog(directory=tmp_path_factory.mktemp("lookups"))
    yield catalog
    catalog.close()


class Runs:
    """Writes derived runs into a fresh container and keeps them in order as the oracle."""

    def __init__(self, catalog):
        name = f"processed_{uuid.uuid4().hex[:8]}"
        self.container = catalog.client.create_container(name, specs=[Spec("CatalogOfBlueskyRuns", version="3.0")])
        self.written: list[dict] = []

    def add(self, analysis: str, detector: str = "det", status: str | None = "success", replay: bool = False,
            parents: tuple[str, ...] = ()) -> str:
        uid = str(uuid.uuid4())
        start = {"uid": uid, "time": 0.0, "analysis": analysis, "detector_name": detector,
                 "parent_uids": list(parents) or [str(uuid.uuid4())], **({REPLAY_KEY: True} if replay else {})}
        metadata = {"start": start}
        if status is not None:
            metadata["stop"] = {"uid": str(uuid.uuid4()), "run_start": uid, "exit_status": status}
        self.container.create_container(key=uid, metadata=metadata, specs=[Spec("BlueskyRun", version="3.0")])
        self.written.append(metadata)
        return uid

    def finish(self, uid: str, status: str = "success") -> None:
        """Write the stop of a run written unfinished (as TiledWriter does at a run's end)."""
        self.container[uid].update_metadata({"stop": {"uid": str(uuid.uuid4()), "run_start": uid,
                                                      "exit_status": status}})
        next(m for m in self.written if m["start"]["uid"] == uid)["stop"] = {"exit_status": status}

    def expected(self, analysis: str, detector: str | None = None, parent: str | None = None) -> str | None:
        """The newest successful live run so named, from the runs as written."""
        for metadata in reversed(self.written):
            start = metadata["start"]
            if (start["analysis"] == analysis and REPLAY_KEY not in start
                    and (metadata.get("stop") or {}).get("exit_status") == "success"
                    and detector in (None, start["detector_name"]) and parent in (None, *start["parent_uids"])):
                return start["uid"]
        return None


def _uid(run) -> str | None:
    return None if run is None else run.start["uid"]


def test_lookups_find_the_newest_successful_live_run_among_many(catalog):
    runs, rng = Runs(catalog), np.random.default_rng(7)
    raw = [str(uuid.uuid4()) for _ in range(10)]
    for _ in range(60):
        runs.add(ANALYSES[rng.integers(3)], DETECTORS[rng.integers(2)],
                 status=("success", "success", "fail", "abort")[rng.integers(4)], replay=rng.random() < 0.2,
                 parents=(raw[rng.integers(len(raw))],))
    processed = runs.container
    for _ in range(3):
        for analysis in ANALYSES:
            for detector in (None, *DETECTORS):
                assert _uid(current_run(processed, analysis, detector)) == runs.expected(analysis, detector)
        for parent in raw[:6]:
            assert _uid(current_derived_of(processed, "integration", parent)) == runs.expected("integration",
                                                                                               parent=parent)
        # then newer runs that must not become current, and one that must
        current = runs.expected("calibration", "det")
        runs.add("calibration", "det", status="fail")
        runs.add("calibration", "det", replay=True)
        runs.add("calibration", "det2")
        assert _uid(current_run(processed, "calibration", "det")) == current
        assert _uid(current_run(processed, "calibration")) == runs.expected("calibration")
        newest = runs.add("gain_map", "det2")
        assert latest_gain_map_uid(processed, "det2") == newest
        assert latest_gain_map_uid(processed, "det") == runs.expected("gain_map", "det")


def test_a_run_written_unfinished_counts_from_its_stop_in_its_place(catalog):
    runs = Runs(catalog)
    older = runs.add("calibration")
    in_progress = runs.add("calibration", status=None)
    assert _uid(current_run(runs.container, "calibration", "det")) == older
    runs.finish(in_progress)
    assert _uid(current_run(runs.container, "calibration", "det")) == in_progress
    slow = runs.add("calibration", status=None)
    newer = runs.add("calibration")
    runs.finish(slow)  # finished after a newer run: the newer one, inserted later, stays current
    assert _uid(current_run(runs.container, "calibration", "det")) == newer == runs.expected("calibration", "det")
    failing = runs.add("calibration", status=None)
    runs.finish(failing, "fail")
    assert _uid(current_run(runs.container, "calibration", "det")) == newer


def test_a_deleted_current_run_gives_way_to_the_one_before(catalog):
    runs = Runs(catalog)
    first = runs.add("gain_map")
    second = runs.add("gain_map")
    for _ in range(ANCHORS + 2):  # more than the runs read that are kept as anchors
        runs.add("integration")
    assert latest_gain_map_uid(runs.container, "det") == second
    runs.container[second].delete(recursive=True, external_only=False)
    assert latest_gain_map_uid(runs.container, "det") == first


def test_a_lookup_reads_only_the_runs_added_since_the_last(catalog):
    runs = Runs(catalog)
    calibration = runs.add("calibration")
    for i in range(60):
        runs.add("integration", status=None if i == 5 else "success")
    index = LiveRunIndex()
    assert _uid(index.run(runs.container, ("analysis", "calibration", "det"))) == calibration
    assert index.runs_read == FIRST_PAGE + 1  # the newest page, then a search finds the calibration
    runs.add("integration")
    newer = runs.add("calibration")
    with RequestCounter(catalog.client) as requests:
        assert _uid(index.run(runs.container, ("analysis", "calibration", "det"))) == newer
    # the two new runs, in one page of the newest runs, and one read of the run found
    assert index.runs_read == FIRST_PAGE + 1 + 2
    assert requests.count == 2
