"""``xrd-bluesky bench live``: the live chain at a detector frame rate on pre-rendered frames."""

from __future__ import annotations

import time

import numpy as np

from xrd_bluesky.errors import UsageError
from xrd_bluesky.science.sim.image_formation import (
    detect,
    expected_photons,
)
from xrd_bluesky.sim_devices.beamline import BeamlineConfig

from .common import rss_mb


def live(seconds: float = 120.0, frames_per_event: int = 10, frame_rate: float = 30.0,
         warmup_s: float = 20.0, detector: str = "Pilatus2MCdTe", paced: bool = False,
         run_seconds: float | None = None, served: bool = False) -> dict:
    """The whole live chain at a detector frame rate, on pre-rendered frames.

    A RunEngine counts glass with the simulated detector (``frames_per_event`` frames of
    ``1/frame_rate`` s per trigger, pre-rendered and compressed, as a detector delivers
    them, so that neither is timed), I0 and
    It, for ``seconds`` (s) after ``warmup_s`` (s): as fast as the chain allows, or, with
    ``paced``, no faster than the detector would deliver them (``frame_rate`` Hz). Every
    frame is written to HDF5, announced, read back, dark-subtracted and masked; each
    event's frames are integrated in q and 2theta, put on the absolute scale, and
    raw and derived documents are spooled and uploaded to an embedded Tiled catalog
    (in this process) or, with ``served``, to one served by ``xrd-bluesky serve`` in a
    child process (the catalog's server then shares the cores, not this process's
    global interpreter lock).
    With ``run_seconds`` (s) the time is split into consecutive runs of that length,
    each with its darks, as a beamline's successive scans; otherwise it is one run.
    Prints the frame rate sustained, the growth of resident memory after the warm-up
    (the soak: ``--seconds 600 --paced --run-seconds 60``) and the depth of the
    writers' upload queue.
    """
    import contextlib
    import os
    import secrets
    import tempfile

    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    from xrd_bluesky.cli.session import build_session
    from xrd_bluesky.plans.counting import stage_motors, take_darks
    from xrd_bluesky.schema.start import MEASUREMENT, run_start
    from xrd_bluesky.store.server import API_KEY_VARIABLE
    from xrd_bluesky_bench.testing import ServerProcess

    out: dict[str, float | int | str] = {"detector": detector, "frames_per_event": frames_per_event,
                                         "target_frame_rate_hz": frame_rate, "paced": str(paced),
                                         "catalog": "served" if served else "embedded"}
    with tempfile.TemporaryDirectory(prefix="xrd-bluesky-bench-") as tmp, contextlib.ExitStack() as stack:
        uri = None
        if served:  # the session's client reads the key from the environment
            key = os.environ.setdefault(API_KEY_VARIABLE, secrets.token_hex(16))
            uri = stack.enter_context(ServerProcess(tmp, key)).uri
        session = build_session(directory=tmp, uri=uri, config=BeamlineConfig(detector=detector))
        try:
            bl = session.beamline
            bl.sample_changer.slot.put("glass")
            det = bl.detector
            det.acquire_time.put(1.0 / frame_rate)
            det.num_frames.put(frames_per_event)
            poni = bl.true_poni()
            photons = expected_photons(bl.sample_changer.sample(), poni, flux_ph_s=bl.config.flux_ph_s,
                                       exposure_s=1.0 / frame_rate, beamstop=bl.config.beamstop)
            rng = np.random.default_rng(0)
            det.use_prerendered(np.stack([detect(photons, det.response, 1.0 / frame_rate, rng)
                                          for _ in range(2 * frames_per_event)]))
            # (time s, frames, RSS MB, queued documents, run number)
            samples: list[tuple[float, int, float, int, int]] = []
            primary: set[str] = set()

            def progress(name, doc):
                if name == "descriptor" and doc["name"] == "primary":
                    primary.add(doc["uid"])
                elif name == "event" and doc["descriptor"] in primary:
                    samples.append((time.perf_counter(), (len(samples) + 1) * frames_per_event, rss_mb(),
                                    sum(w.depth for w in session.writers), len(primary)))

            stage = bl.stage
            position = (stage.x.position, stage.y.position, stage.distance.position)
            md = run_start(MEASUREMENT, stage_motors=stage_motors(stage), positions_mm=[position], dark_frames=True,
                           energy_keV=float(bl.source.energy.get()), sample=bl.sample_changer.sample().metadata(),
                           plan_name="bench_live")
            detectors = [det, bl.i0, bl.it]
            motors = [stage.x, stage.y, stage.distance]

            trigger_period = frames_per_event / frame_rate if paced else 0.0
            # paced: (time s, how far (s) each trigger came after the detector's clock)
            lags: list[tuple[float, float]] = []

            @bpp.run_decorator(md=md)
            def one_run(until: float):
                yield from bpp.stage_wrapper(take_darks(detectors, bl.source.shutter), detectors)

                def counts():
                    # a detector delivers frames on its own clock: a slow trigger must be
                    # made up by the next ones, or the chain has fallen behind (lag)
                    due = time.perf_counter()
                    while max(due, time.perf_counter()) < until:  # unpaced, due stays at the start
                        now = time.perf_counter()
                        lags.append((now, now - due))
                        yield from bps.trigger_and_read(detectors + motors)
                        due += trigger_period
                        yield from bps.sleep(max(0.0, due - time.perf_counter()))
                yield from bpp.stage_wrapper(counts(), detectors)

            def plan():
                end = time.perf_counter() + warmup_s + seconds
                while (now := time.perf_counter()) < end:
                    yield from one_run(min(end, now + (run_seconds or np.inf)))

            token = session.RE.subscribe(progress)
            session.RE(plan())
            session.RE.unsubscribe(token)
            # a run's stop stops waiting for its upload if the server seems stalled: the
            # catalog is read once the writers are done (or gave up)
            waited = time.perf_counter()
            for writer in session.writers:
                writer.flush(timeout_s=600)
            out["upload_wait_after_scan_s"] = time.perf_counter() - waited
            out["runs"] = len(list(session.catalog.raw))
            t = np.array([s[0] for s in samples])
            n = np.array([s[1] for s in samples])
            rss = np.array([s[2] for s in samples])
            after = t >= t[0] + warmup_s
            if after.sum() < 2:
                raise UsageError(f"{after.sum()} event(s) after the {warmup_s:g} s warm-up: too few to measure a "
                                 "rate; measure longer (--seconds)")
            out["frames"] = int(n[-1])
            out["seconds_measured"] = float(t[-1] - t[after][0])
            out["frame_rate_hz"] = float((n[-1] - n[after][0]) / (t[-1] - t[after][0]))
            # within runs: without the darks and run starts and stops between them
            run = np.array([s[4] for s in samples])
            spans = [(t[after & (run == r)], n[after & (run == r)]) for r in np.unique(run[after])]
            spans = [(tr[-1] - tr[0], nr[-1] - nr[0]) for tr, nr in spans if len(tr) > 1]
            out["frame_rate_within_runs_hz"] = float(sum(f for _, f in spans) / sum(d for d, _ in spans))
            if paced:
                lag_t, lag = np.array(lags).T
                out["max_lag_behind_detector_s"] = float(lag.max())  # the first event builds the integrators
                out["max_lag_after_warmup_s"] = float(lag[lag_t >= t[0] + warmup_s].max())
            out["rss_after_warmup_mb"] = float(rss[after][0])
            out["rss_end_mb"] = float(rss[-1])
            out["rss_growth_after_warmup_mb"] = float(rss[-1] - rss[after][0])
            # whether the growth levels off: the second half of the measurement against the first
            middle = t >= (t[after][0] + t[-1]) / 2
            out["rss_growth_first_half_mb"] = float(rss[middle][0] - rss[after][0])
            out["rss_growth_second_half_mb"] = float(rss[-1] - rss[middle][0])
            depth = np.array([s[3] for s in samples])
            out["writer_queue_max_documents"] = max(w.max_depth for w in session.writers)
            out["writer_queue_mean_documents_after_warmup"] = float(depth[after].mean())
            out["writer_queue_bound_documents"] = sum(w.max_queued for w in session.writers)
            out["spool_files_left"] = len(list(session.catalog.spool_dir.rglob("*.jsonl")))
            if len(session.catalog.processed):
                derived = session.catalog.processed.values().last()
                out["derived_exit_status"] = (derived.stop or {}).get("exit_status", "none")
                out["derived_absolute_events"] = int(len(derived["absolute"].read()["intensity"]))
            else:  # its upload failed: the writer's warning says why, its spool file is left
                out["derived_exit_status"] = "not in the catalog"
        finally:
            session.close()
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out
