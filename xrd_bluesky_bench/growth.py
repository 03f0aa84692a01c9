"""Run-start lookups and a search by sample as the catalog grows.

The catalog (embedded, in a temporary directory) is filled with small runs: raw
measurement runs of many samples and their integrations, calibrations and gain maps of
two detectors, some failed and some replayed. The runs whose contents the lookups read
(the current calibration, gain map and background integration, written just before
each checkpoint and then followed by newer failed runs and replays that must be passed
over) are written as the package writes derived runs: a
:class:`~xrd_bluesky.callbacks.derived.DerivedRunCallback` into bluesky-tiled-plugins'
``TiledWriter``. The others are only looked at, never read, so they are written in the
layout TiledWriter gives a finished run (a ``BlueskyRun`` container whose metadata
holds the start and stop documents) straight into the catalog's database, through a
second Tiled catalog adapter on it (``tiled.catalog.from_uri``), which makes 10,000
runs take minutes instead of hours of requests (about 0.1-1 s each on a busy machine).
The catalog is in a temporary directory in ``/dev/shm`` when there is one.

At each checkpoint (100, 1,000 and 10,000 runs, up to ``runs``) it prints the time to
set up a measurement run's analysis (current calibration and its geometry, gain map,
a background's stored pattern: what :class:`~xrd_bluesky.beamline.attach.LiveInputs`
does at a run's start), with one new measurement and its integration added before each
timed start as during a beamtime; the same through the previous lookups, which list
every matching run (the reference path); the first lookup of a process, which searches
with conditions once; the requests each start makes; a search by sample; and the
process's resident memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable

import numpy as np
from tiled.catalog import from_uri as catalog_adapter
from tiled.queries import Contains, Key
from tiled.server.schemas import Spec as SpecSchema
from tiled.structures.core import Spec, StructureFamily

from xrd_bluesky.beamline.attach import LiveInputs
from xrd_bluesky.callbacks.derived import DerivedRunCallback
from xrd_bluesky.schema.start import DERIVED, MEASUREMENT, run_start
from xrd_bluesky.science.geometry import DetectorPositionModel, Poni, StagePosition
from xrd_bluesky.store import open_catalog
from xrd_bluesky.store.calibrations import geometry_from_calibration
from xrd_bluesky.store.derived_runs import current_derived_of, current_run, reset_index
from xrd_bluesky.store.lineage import live_runs
from xrd_bluesky.store.references import reference_pattern
from xrd_bluesky.store.writer import tiled_writer

from .common import RequestCounter, rss_mb

CHECKPOINTS = (100, 1_000, 10_000)
DETECTORS = ("det", "det2")
#: Samples measured (a search by sample finds about 1 run in len(SAMPLES)).
SAMPLES = tuple(f"sample_{i:03d}" for i in range(50))
#: Timed run starts per checkpoint (the fastest is reported: the machine may be busy).
STARTS = 5
_RUN_SPEC_SCHEMA = SpecSchema(name="BlueskyRun", version="3.0")


def growth(runs: int) -> dict:
    """Fill a temporary catalog up to ``runs`` runs (raw and derived) and, at each
    checkpoint of :data:`CHECKPOINTS` up to it, time the run-start lookups (ours and the
    listing reference), a search by sample and the memory; print and return them."""
    checkpoints = [n for n in CHECKPOINTS if n <= runs] or [runs]
    result: dict = {}
    memory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="xrd-bluesky-bench-growth-", dir=memory) as directory:
        catalog = open_catalog(directory=directory)
        try:
            filler = _Filler(catalog, f"sqlite:///{directory}/tiled/catalog.db")
            fill_s = 0.0
            for n in checkpoints:
                t0 = time.perf_counter()
                filler.fill_to(n - _CURRENT_RUNS)
                current = _write_current(catalog)
                filler.count += _CURRENT_RUNS
                fill_s += time.perf_counter() - t0
                result.update(_measure(catalog, filler, current, n))
                result[f"fill_s_to_{n}"] = round(fill_s, 1)
                _print(result, n)
        finally:
            catalog.close()
    last = checkpoints[-1]
    result[f"start_lookup_growth_{last}_over_{checkpoints[0]}"] = round(
        result[f"start_lookup_ms_at_{last}"] / result[f"start_lookup_ms_at_{checkpoints[0]}"], 2)
    result[f"listing_start_lookup_growth_{last}_over_{checkpoints[0]}"] = round(
        result[f"listing_start_lookup_ms_at_{last}"] / result[f"listing_start_lookup_ms_at_{checkpoints[0]}"], 2)
    for key in (f"start_lookup_growth_{last}_over_{checkpoints[0]}",
                f"listing_start_lookup_growth_{last}_over_{checkpoints[0]}"):
        print(f"{key}: {result[key]}")
    return result


def _print(result: dict, n: int) -> None:
    print(f"-- {n} runs (filled in {result[f'fill_s_to_{n}']} s)", flush=True)
    for key in ("start_lookup_ms", "listing_start_lookup_ms", "uid_lookups_ms", "listing_uid_lookups_ms",
                "cold_start_lookup_ms", "search_ms",
                "start_lookup_requests", "listing_start_lookup_requests", "rss_mb"):
        print(f"{key}_at_{n}: {result[f'{key}_at_{n}']}", flush=True)


class _Filler:
    """Writes filler runs in the layout TiledWriter gives a finished run, into the
    catalog whose database is at ``database`` (an SQLAlchemy URI)."""

    def __init__(self, catalog, database: str):
        self.catalog = catalog
        self.database = database
        self.count = 0
        self.rng = np.random.default_rng(0)
        self._pending: list[tuple[str, dict]] = []

    def fill_to(self, n: int) -> None:
        """Add runs until the catalog holds ``n``: per block of 50, 22 measurements
        (raw and integration), a calibration and a gain map of each detector (one in
        ten failed, one in ten replayed) and two peak fits."""
        while self.count < n:
            self._next(self.count)()
            self.count += 1
        asyncio.run(self.flush())

    async def flush(self) -> None:
        """Insert the runs written so far, in order, straight into the database."""
        adapter = catalog_adapter(self.database)
        await adapter.startup()
        try:
            containers = {name: await adapter.lookup_adapter([name]) for name in ("raw", "processed")}
            for name, metadata in self._pending:
                await containers[name].create_node(structure_family=StructureFamily.container, metadata=metadata,
                                                   key=metadata["start"]["uid"], specs=[_RUN_SPEC_SCHEMA])
        finally:
            self._pending.clear()
            await adapter.shutdown()

    def _next(self, i: int) -> Callable[[], None]:
        slot = i % 50
        if slot < 44:
            sample = SAMPLES[int(self.rng.integers(len(SAMPLES)))]
            raw_uid = str(uuid.uuid4())
            if slot % 2 == 0:
                return lambda: self.raw(raw_uid, sample)
            return lambda: self.derived("integration", DETECTORS[0], [raw_uid], sample=sample)
        analysis = ("calibration", "gain_map", "peak_fits")[(slot - 44) // 2]
        status = "fail" if i % 500 == 45 else "success"
        replay = {"replay": True, "replay_of": None} if i % 500 == 47 else {}
        return lambda: self.derived(analysis, DETECTORS[slot % 2], [str(uuid.uuid4())], status, **replay)

    def raw(self, uid: str, sample: str) -> None:
        start = {"uid": uid, "time": time.time(), **run_start(MEASUREMENT, plan_name="count", scan_id=1,
                                                              sample={"name": sample, "thickness_mm": 1.0},
                                                              detector_name=DETECTORS[0])}
        self._pending.append(("raw", _finished(start, "success")))

    def derived(self, analysis: str, detector: str, parents: list[str], status: str = "success", **extra) -> None:
        start = {"uid": str(uuid.uuid4()), "time": time.time(), "purpose": DERIVED, "analysis": analysis,
                 "parameters": {"npt": 2000}, "parent_uids": parents, "detector_name": detector,
                 "xrd_bluesky_version": "bench", **extra}
        self._pending.append(("processed", _finished(start, status)))


def _finished(start: dict, status: str) -> dict:
    """The metadata of a finished run that ``start`` opened and that ended ``status``."""
    stop = {"uid": str(uuid.uuid4()), "run_start": start["uid"], "time": start["time"], "exit_status": status,
            "reason": "" if status == "success" else "bench: failed", "num_events": {}}
    return {"start": start, "stop": stop}


#: Runs :func:`_write_current` writes.
_CURRENT_RUNS = 8


def _write_current(catalog) -> dict:
    """Write, as the package writes derived runs, a calibration and a gain map of the
    first detector and a background's raw run and integration; then newer runs the
    lookups must pass over (a failed calibration, a replayed calibration and gain map, a
    calibration of the other detector). Return the uids the lookups must find."""
    processed = catalog.processed
    background = {"uid": str(uuid.uuid4()), "time": time.time(),
                  **run_start(MEASUREMENT, sample={"name": "background", "thickness_mm": 1.0},
                              detector_name=DETECTORS[0])}
    catalog.raw.create_container(key=background["uid"], metadata=_finished(background, "success"),
                                 specs=[Spec("BlueskyRun", version="3.0")])
    parent = {"uid": str(uuid.uuid4()), "detector_name": DETECTORS[0]}
    q = np.linspace(1, 50, 16)
    model = DetectorPositionModel(Poni(0.2, 0.05, 0.05, wavelength=1e-10, detector="Pilatus100k"),
                                  StagePosition(0.0, 0.0, 200.0))
    calibration = _derived_run(processed, "calibration", parent, "model", {
        "dist": 0.2, "poni1": 0.05, "poni2": 0.05, "rot1": 0.0, "rot2": 0.0, "rot3": 0.0, "wavelength": 1e-10,
        "reference_x": 0.0, "reference_y": 0.0, "reference_distance": 200.0, "detector": "Pilatus100k",
        "model_json": json.dumps(model.as_dict())})
    gain_map = _derived_run(processed, "gain_map", parent, "gain_map", {
        "gain": np.ones((4, 4), np.float32), "bad": np.zeros((4, 4), np.uint8)})
    integration = _derived_run(processed, "integration", background, "stitched_absolute", {
        "q": q, "intensity": np.ones_like(q), "sigma": np.full_like(q, 0.1), "frames": 1, "thickness_mm": 1.0,
        "standard_factor": 1.0, "final": True})
    _derived_run(processed, "calibration", parent, "model", {"detector": "Pilatus100k"}, status="fail")
    _derived_run(processed, "calibration", parent, "model", {"detector": "Pilatus100k"},
                 replay={"replay": True, "replay_of": calibration})
    _derived_run(processed, "gain_map", parent, "gain_map", {"gain": np.ones((4, 4), np.float32)},
                 replay={"replay": True, "replay_of": gain_map})
    _derived_run(processed, "calibration", {**parent, "detector_name": DETECTORS[1]}, "model",
                 {"detector": "Pilatus100k"})
    return {"calibration": calibration, "gain_map": gain_map, "integration": integration,
            "background": background["uid"]}


def _derived_run(processed, analysis: str, parent: dict, stream: str, data: dict, status: str = "success",
                 replay: dict | None = None) -> str:
    """Write a derived run of ``analysis`` (one event of ``stream``) into ``processed``
    as the live analyses and the processed writer do, ending ``status``; its uid."""
    run = DerivedRunCallback(tiled_writer(processed, batch_size=10), provenance=replay)
    run.analysis = analysis
    bundle = run.open_derived(parent, {"npt": 16})
    run.emit_event(stream, data, {key: "" for key in data})
    run("stop", {"exit_status": status, "reason": "" if status == "success" else "bench: failed"})
    return bundle.start_doc["uid"]


def _measure(catalog, filler: _Filler, current: dict, n: int) -> dict:
    """Time the run-start lookups, ours and the listing ones, and a search by sample."""
    inputs = LiveInputs(catalog)
    reset_index(catalog.processed)
    t0 = time.perf_counter()
    found = _start_lookup(inputs, current["background"])
    cold_ms = 1000 * (time.perf_counter() - t0)
    found += (current_derived_of(catalog.processed, "integration", current["background"]).start["uid"],)
    listing = _listing_start_lookup(catalog, current["background"])
    expected = (current["calibration"], current["gain_map"], current["background"], current["integration"])
    if found != expected or listing != expected:
        raise AssertionError(f"at {n} runs the lookups found {found} (listing: {listing}), not {expected}")
    ours, reference, ours_uids, listing_uids = [], [], [], []
    for _ in range(STARTS):
        filler.raw(raw_uid := str(uuid.uuid4()), SAMPLES[0])  # the previous measurement and its integration
        filler.derived("integration", DETECTORS[0], [raw_uid], sample=SAMPLES[0])
        asyncio.run(filler.flush())
        ours.append(_timed(catalog, lambda: _start_lookup(inputs, current["background"])))
        reference.append(_timed(catalog, lambda: _listing_start_lookup(catalog, current["background"])))
        ours_uids.append(_timed(catalog, lambda: _uids(catalog.processed, current["background"], current_run,
                                                      current_derived_of)))
        listing_uids.append(_timed(catalog, lambda: _uids(catalog.processed, current["background"],
                                                          _listing_run, _listing_derived_of)))
    filler.count += 2 * STARTS
    search = [_timed(catalog, lambda: list(catalog.raw.search(Key("sample.name") == SAMPLES[1])))
              for _ in range(3)]
    return {f"start_lookup_ms_at_{n}": min(ms for ms, _ in ours),
            f"listing_start_lookup_ms_at_{n}": min(ms for ms, _ in reference),
            f"cold_start_lookup_ms_at_{n}": round(cold_ms, 1),
            f"search_ms_at_{n}": min(ms for ms, _ in search),
            f"uid_lookups_ms_at_{n}": min(ms for ms, _ in ours_uids),
            f"listing_uid_lookups_ms_at_{n}": min(ms for ms, _ in listing_uids),
            f"start_lookup_requests_at_{n}": max(k for _, k in ours),
            f"listing_start_lookup_requests_at_{n}": max(k for _, k in reference),
            f"rss_mb_at_{n}": round(rss_mb(), 1)}


def _timed(catalog, fn: Callable[[], object]) -> tuple[float, int]:
    """Time (ms) of ``fn()`` and the requests it made to the catalog's server."""
    with RequestCounter(catalog.client) as requests:
        t0 = time.perf_counter()
        fn()
        return round(1000 * (time.perf_counter() - t0), 1), requests.count


def _start_lookup(inputs: LiveInputs, background_uid: str) -> tuple[str, ...]:
    """What a measurement run's analysis looks up at its start: the current geometry
    and gain map of its detector, its background's pattern; the uids of the
    calibration, the gain map and the pattern's raw run."""
    geometry = inputs.current_geometry(DETECTORS[0])
    gain_map = inputs.current_gain_map(DETECTORS[0])
    pattern = reference_pattern(inputs.catalog.processed, background_uid)
    return geometry.calibration_uid, gain_map.gain_map_uid, pattern.uid


def _listing_start_lookup(catalog, background_uid: str) -> tuple[str, ...]:
    """The reference path: the same lookups by listing every matching run and taking
    the newest successful one (as the lookups did before)."""
    processed = catalog.processed
    calibration = _listing_run(processed, "calibration", DETECTORS[0])
    gain_map = _listing_run(processed, "gain_map", DETECTORS[0])  # its arrays are cached
    integration = _listing_derived_of(processed, "integration", background_uid)
    integration["stitched_absolute"].read()
    return (geometry_from_calibration(calibration).calibration_uid, gain_map.start["uid"], background_uid,
            integration.start["uid"])


def _uids(processed, background_uid: str, run_of: Callable, derived_of: Callable) -> list[str]:
    """The lookups alone (no contents read): current calibration and gain map of the
    first detector, the background's integration."""
    return [run_of(processed, "calibration", DETECTORS[0]).start["uid"],
            run_of(processed, "gain_map", DETECTORS[0]).start["uid"],
            derived_of(processed, "integration", background_uid).start["uid"]]


def _listing_run(processed, analysis: str, detector_name: str):
    """:func:`~xrd_bluesky.store.derived_runs.current_run` by listing."""
    return _listing_latest(live_runs(processed).search(Key("detector_name") == detector_name), analysis)


def _listing_derived_of(processed, analysis: str, parent_uid: str):
    """:func:`~xrd_bluesky.store.derived_runs.current_derived_of` by listing."""
    return _listing_latest(live_runs(processed).search(Contains("parent_uids", parent_uid)), analysis)


def _listing_latest(runs, analysis: str):
    """The newest run of ``analysis`` in ``runs`` that succeeded, found by listing them all."""
    runs = runs.search(Key("analysis") == analysis)
    for uid in reversed(list(runs)):
        run = runs[uid]
        if (run.stop or {}).get("exit_status") == "success":
            return run
    return None
