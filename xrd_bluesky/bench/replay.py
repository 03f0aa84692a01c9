"""``xrd-bluesky bench replay``: ``replay --search`` on one worker process and on several."""

from __future__ import annotations

import os
import time

import numpy as np

from ..sim_devices.beamline import BeamlineConfig
from .common import cpu_s, max_rel
from .integrate import MG_POSITIONS


def replay_speedup(runs: int = 8, workers: int = 2, num: int = 2, detector: str = "Pilatus2MCdTe") -> dict:
    """Re-processing stored runs: ``xrd-bluesky replay --search`` on one worker process
    (serial) and on ``workers``, on the same runs.

    Records ``runs`` measurement runs (glass, ``num`` exposures at three detector
    positions, live integration) in an embedded catalog, then replays them all on one
    worker and on ``workers`` (fresh processes each time, start-up included) and prints
    both times (s), the speedup, and the largest relative difference between the serial
    and the parallel results (per-frame and stitched intensities and sigmas).

    It also prints where the CPU goes in each (s): ``catalog_cpu_s`` is this process,
    which serves the embedded catalog and writes every derived run; ``workers_cpu_s``
    is the worker processes (reading the raw runs and the analysis). Both share the
    cores, so the parallel replay cannot take less than their sum over the cores
    (``cpu_bound_s``); ``speedup_ceiling`` is the serial time over that bound.
    """
    import tempfile

    from ..plans.counting import multi_position_count
    from ..session import build_session
    from ..store.parallel_replay import find_runs, replay_runs
    from ..store.replay import replay

    out: dict[str, float | int | str] = {"detector": detector, "runs": runs, "workers": workers,
                                         "cpu_count": os.cpu_count() or 0}
    with tempfile.TemporaryDirectory(prefix="xrd-bluesky-bench-") as tmp:
        session = build_session(directory=tmp, config=BeamlineConfig(detector=detector))
        try:
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
            for uid in uids:  # what `xrd-bluesky replay UID` does, run after run
                replay(catalog, uid)
            one_by_one = time.perf_counter() - t0
            timings, results = {}, {}
            for label, n in (("serial", 1), ("parallel", workers)):
                cpu0, t0 = cpu_s(), time.perf_counter()
                outcomes = replay_runs(catalog, uids, workers=n)
                timings[label] = time.perf_counter() - t0
                parent_cpu, workers_cpu = (after - before for after, before in zip(cpu_s(), cpu0))
                out[f"{label}_catalog_cpu_s"] = parent_cpu
                out[f"{label}_workers_cpu_s"] = workers_cpu
                # Both kinds of work share the cores: no schedule can beat the total CPU over the cores.
                out[f"{label}_cpu_bound_s"] = (parent_cpu + workers_cpu) / out["cpu_count"]
                failed = [o for o in outcomes if o.error or any(r.exit_status != "success" for r in o.runs)]
                if failed:
                    raise RuntimeError(f"{label} replay failed: {failed}")
                results[label] = {o.raw_uid: catalog.processed[o.runs[0].uid] for o in outcomes}
            worst = 0.0
            for uid in uids:
                serial, parallel = results["serial"][uid], results["parallel"][uid]
                for stream, keys in (("primary", ("intensity_q", "sigma_q", "intensity_2theta", "sigma_2theta")),
                                     ("stitched", ("intensity", "sigma"))):
                    a, b = serial[stream].read(), parallel[stream].read()
                    for key in keys:
                        x, y = np.asarray(a[key], dtype=float), np.asarray(b[key], dtype=float)
                        both = np.isfinite(x) & (x != 0)
                        worst = max(worst, max_rel(y, x, both) if both.any() else 0.0)
                        if not np.array_equal(np.isfinite(x), np.isfinite(y)):
                            worst = np.inf
            out["serial_s"] = timings["serial"]
            out["parallel_s"] = timings["parallel"]
            out["speedup"] = timings["serial"] / timings["parallel"]
            out["speedup_ceiling"] = timings["serial"] / out["parallel_cpu_bound_s"]
            out["one_by_one_in_process_s"] = one_by_one
            out["speedup_vs_one_by_one"] = one_by_one / timings["parallel"]
            out["max_rel_diff_parallel_vs_serial"] = worst
        finally:
            session.close()
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out
