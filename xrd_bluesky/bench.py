"""Side-by-side benchmarks behind ``xrd-bluesky bench``: our path and the reference path
(plain pyFAI) on the same frames, in one process, both warmed up. Each prints
``name: value`` lines."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace

import numba
import numpy as np

from .science.corrected_integration import CorrectedIntegrator, pixel_splitting
from .science.geometry import Poni, StagePosition
from .science.image_formation import DetectorResponse, detect, expected_photons, pixel_geometry
from .science.position_models import ArmModel, ArmPosition
from .science.multi_geometry import covered_radial_range, stitch
from .science.samples import default_library
from .science.units import wavelength_m
from .sim_devices.beamline import BeamlineConfig

#: pyFAI's method for the reference path.
CSR = ("bbox", "csr", "cython")
#: Detector-stage positions (x, y, distance; mm) of the MultiGeometry benchmark.
MG_POSITIONS = [(0, 0, 300), (40, -30, 280), (-35, 40, 320), (60, 50, 300), (-50, -45, 340)]


def _best_per_call(fn: Callable[[int], object], n: int, repeats: int) -> float:
    """Best over ``repeats`` of the mean time (s) of ``n`` calls ``fn(i)``."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def _frames(poni: Poni, response: DetectorResponse, n: int, seed: int) -> list[np.ndarray]:
    photons = expected_photons(default_library()["glass"], poni, flux_ph_s=1e11, exposure_s=1.0,
                               beamstop=BeamlineConfig().beamstop)
    rng = np.random.default_rng(seed)
    return [detect(photons, response, 1.0, rng) for _ in range(n)]


def _max_rel(ours: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> float:
    return float(np.max(np.abs(ours[valid] / ref[valid] - 1)))


def integrate(detector: str = "Pilatus2MCdTe", n_frames: int = 8, npt: int = 2000, repeats: int = 5) -> dict:
    """Per-frame 1D integration and 5-position stitching, ours vs pyFAI's CSR.

    Both with pixel splitting (bbox), dark, gain, mask (gaps + beamstop), polarization
    (0.99), solid angle (absolute) and Poisson errors, ``npt`` bins in q (1/nm).
    Returns and prints the numbers.
    """
    config = BeamlineConfig(detector=detector)
    model = config.true_geometry().with_wavelength(wavelength_m(config.energy_keV))
    response = DetectorResponse.simulate(detector, 1, pixel_rms=config.gain_pixel_rms, module_rms=config.gain_module_rms)
    dark = response.dark_rate() * 1.0
    out: dict[str, float | int | str] = {
        "detector": detector, "bins": npt, "frames": n_frames,
        "threads_numba": numba.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset")}

    def corrections(poni: Poni) -> dict:
        ai = poni.integrator()
        shadow = config.beamstop.shadow(pixel_geometry(poni), margin_mm=0.5)
        return {"mask": ai.detector.mask.astype(bool) | shadow, "flat": response.gain, "dark": dark,
                "polarization_factor": 0.99, "normalization_factor": ai.pixel1 * ai.pixel2 / ai.dist**2}

    # -- single frame --------------------------------------------------------
    poni = model.poni_at(StagePosition(0, 0, 300))
    frames = _frames(poni, response, n_frames, 2)
    ref_kw = corrections(poni)
    ai = poni.integrator()
    t0 = time.perf_counter()
    ours = CorrectedIntegrator(poni, npt=npt, mask=ref_kw["mask"], gain=response.gain, dark=dark,
                               max_count=response.max_count)
    ours.integrate(frames[0])
    out["ours_setup_s"] = time.perf_counter() - t0

    def pyfai_1d(i):
        return ai.integrate1d_ng(frames[i % n_frames], npt, unit="q_nm^-1", method=CSR, error_model="poisson", **ref_kw)

    ref = pyfai_1d(0)
    mine = ours.integrate(frames[0])
    valid = ref.count > 0
    out["integrate1d_max_rel_diff_intensity"] = _max_rel(mine.intensity, ref.intensity, valid)
    out["integrate1d_max_rel_diff_sigma"] = _max_rel(mine.sigma, ref.sigma, valid)
    t_pyfai = _best_per_call(pyfai_1d, n_frames, repeats)
    t_ours = _best_per_call(lambda i: ours.integrate(frames[i % n_frames]), n_frames, repeats)
    out["integrate1d_pyfai_ms"] = 1e3 * t_pyfai
    out["integrate1d_ours_ms"] = 1e3 * t_ours
    out["integrate1d_speedup_vs_pyfai"] = t_pyfai / t_ours

    # -- MultiGeometry ---------------------------------------------------------
    from pyFAI.multi_geometry import MultiGeometry

    ponis = [model.poni_at(StagePosition(*p)) for p in MG_POSITIONS]
    mg_frames = [_frames(p, response, 1, 10 + k)[0] for k, p in enumerate(ponis)]
    kws = [corrections(p) for p in ponis]
    q_range = covered_radial_range(ponis)
    t0 = time.perf_counter()
    integrators = [CorrectedIntegrator(p, npt=npt, radial_range=q_range, mask=kw["mask"], gain=response.gain,
                                       dark=dark, max_count=response.max_count) for p, kw in zip(ponis, kws)]
    out["multigeometry_ours_setup_s"] = time.perf_counter() - t0
    mg = MultiGeometry(reference_integrators(ponis), unit="q_nm^-1", radial_range=q_range,
                       azimuth_range=(-180, 180))
    def pyfai_mg(_):
        # MultiGeometry takes no dark: subtract it, and give the Poisson variance of the
        # raw counts (what integrate1d computes), to get the same outputs as ours
        return mg.integrate1d([(f - dark).astype(np.float32) for f in mg_frames], npt,
                              lst_mask=[kw["mask"] for kw in kws], lst_flat=response.gain, polarization_factor=0.99,
                              lst_variance=[np.maximum(f, 1.0).astype(np.float32) for f in mg_frames], method=CSR)

    def ours_mg(_):
        return stitch(integ.sums(f) for integ, f in zip(integrators, mg_frames)).result()

    ref_mg, mine_mg = pyfai_mg(0), ours_mg(0)
    valid = ref_mg.count > 0
    out["multigeometry_max_rel_diff_intensity"] = _max_rel(mine_mg.intensity, ref_mg.intensity, valid)
    out["multigeometry_max_rel_diff_sigma"] = _max_rel(mine_mg.sigma, ref_mg.sigma, valid)
    t_pyfai = _best_per_call(pyfai_mg, 2, repeats)
    t_ours = _best_per_call(ours_mg, 2, repeats)
    out["multigeometry_pyfai_ms"] = 1e3 * t_pyfai
    out["multigeometry_ours_ms"] = 1e3 * t_ours
    out["multigeometry_speedup_vs_pyfai"] = t_pyfai / t_ours
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


#: A pyFAI dummy value no dark-subtracted frame reaches (see :func:`reference_integrators`).
UNREACHABLE_DUMMY = -2**62


def reference_integrators(ponis: list[Poni]) -> list:
    """Fresh pyFAI integrators, one per geometry, for the reference ``MultiGeometry``,
    whose detectors have no reachable dummy value.

    ``MultiGeometry`` takes no dark, so it is given ``raw - dark``; pyFAI's Dectris
    detectors mask values within 1.5 of -2 (their gap and bad-pixel codes) as dummies,
    which would drop every pixel with 0 counts and a dark of 1 to 3 counts: a mask that
    is neither ours nor that of pyFAI's own ``integrate1d`` given the raw frame and the
    dark. Each gets its own detector (as from its own PONI file), not the shared one.
    """
    import copy

    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    out = []
    for p in ponis:
        det = copy.deepcopy(p.detector_model())
        det.dummy, det.delta_dummy = UNREACHABLE_DUMMY, 0.5
        out.append(AzimuthalIntegrator(dist=p.dist, poni1=p.poni1, poni2=p.poni2, rot1=p.rot1, rot2=p.rot2,
                                       rot3=p.rot3, wavelength=p.wavelength, detector=det))
    return out


def arm_ponis(reference: Poni, angles_deg: np.ndarray) -> list[Poni]:
    """Geometries of a detector on a vertical 2theta arm whose rotation is zero at
    ``reference``, at each arm angle (deg) (:class:`~xrd_bluesky.science.position_models.ArmModel`)."""
    model = ArmModel(reference, plane="vertical")
    return [model.poni_at(ArmPosition(float(a))) for a in angles_deg]


def float64_stitch(ponis: list[Poni], frames: list[np.ndarray], masks: list[np.ndarray], gain: np.ndarray,
                   dark: np.ndarray, npt: int, unit: str, radial_range: tuple[float, float],
                   polarization_factor: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """Intensity and sigma of the stitched pattern, the definition of
    :mod:`~xrd_bluesky.science.multi_geometry` evaluated plainly in float64 (scipy
    products with pyFAI's splitting matrices and per-pixel corrections): the reference
    both our kernel and pyFAI's float32 pre-processing are held against. ``masks``:
    True = bad, per position; frames hold no invalid pixel beyond them."""
    signal = variance = norm = 0.0
    for poni, frame, mask in zip(ponis, frames, masks):
        ai = poni.integrator()
        bad = mask | ~(gain > 0)
        m = pixel_splitting(poni, npt, None, unit, radial_range, bad).matrix().astype(np.float64)
        m2 = m.multiply(m)
        raw = np.where(bad, 0.0, frame.astype(np.float64)).ravel()
        pixel_norm = (ai.solidAngleArray(poni.detector_model().shape, absolute=True).astype(np.float64)
                      * ai.polarization(factor=polarization_factor) * gain)
        signal = signal + m @ (raw - np.where(bad, 0.0, dark.astype(np.float64)).ravel())
        variance = variance + m2 @ np.maximum(raw, 1.0)
        norm = norm + m @ np.where(bad, 0.0, pixel_norm).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        return signal / norm, np.sqrt(variance) / norm


def _traced_peak_mb(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()`` and the peak of the memory (MB) allocated while it ran, as tracemalloc
    sees it (Python objects and numpy arrays)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def stitch_arm(n_positions: int = 50, detector: str = "Pilatus300kw", distance_m: float = 0.9,
               first_deg: float = 5.0, last_deg: float = 39.0, npt: int = 2000, unit: str = "2th_deg",
               sample: str = "glass", repeats: int = 3) -> dict:
    """Stitching a detector on a 2theta arm: ``n_positions`` arm angles from
    ``first_deg`` to ``last_deg`` (deg), ours vs pyFAI's ``MultiGeometry``.

    The corrections of :func:`integrate`'s MultiGeometry (bbox pixel splitting, dark,
    gain, mask of gaps and beamstop shadow, polarization 0.99, absolute solid angle,
    Poisson variance of the raw counts), ``npt`` bins of ``unit``, one frame of
    ``sample`` per position. Prints and returns: the agreement with pyFAI (max relative
    difference over bins with counts) and of both with the float64 evaluation of the
    same definition (:func:`float64_stitch`); warm times (ms per stitched pattern, both
    prepared); cold times (s: preparing every position from nothing, plus the first
    pattern); the peak memory of each cold stitch (MB, tracemalloc, pass of its own);
    and what our cache holds after it.
    """
    from pyFAI.multi_geometry import MultiGeometry

    from .science import corrected_integration

    config = BeamlineConfig(detector=detector)
    reference = replace(config.true_geometry().reference, dist=distance_m)
    ponis = arm_ponis(reference, np.linspace(first_deg, last_deg, n_positions))
    response = DetectorResponse.simulate(detector, 1, pixel_rms=config.gain_pixel_rms,
                                         module_rms=config.gain_module_rms)
    dark = response.dark_rate() * 1.0
    rng = np.random.default_rng(4)
    frames, masks = [], []
    for p in ponis:
        shadow = config.beamstop.shadow(pixel_geometry(p), margin_mm=0.5)
        photons = expected_photons(default_library()[sample], p, flux_ph_s=config.flux_ph_s, exposure_s=1.0,
                                   beamstop=config.beamstop)
        frames.append(detect(photons, response, 1.0, rng))
        masks.append(p.detector_model().mask.astype(bool) | shadow)
    radial_range = covered_radial_range(ponis, unit)
    out: dict[str, float | int | str] = {
        "stitch_detector": detector, "stitch_positions": n_positions, "stitch_bins": npt, "stitch_unit": unit,
        "stitch_sample": sample, "stitch_beamstop_shadow_px": int(sum((m & ~p.detector_model().mask.astype(bool)).sum()
                                                                    for m, p in zip(masks, ponis))),
        "threads_numba": numba.get_num_threads()}

    def ours_cold():
        corrected_integration.clear_splitting_cache()
        integrators = [CorrectedIntegrator(p, npt=npt, unit=unit, radial_range=radial_range, mask=m,
                                           gain=response.gain, dark=dark, max_count=response.max_count)
                       for p, m in zip(ponis, masks)]
        return integrators, stitch(i.sums(f) for i, f in zip(integrators, frames)).result()

    def pyfai_cold():
        mg = MultiGeometry(reference_integrators(ponis), unit=unit, radial_range=radial_range,
                           azimuth_range=(-180, 180))
        return mg, pyfai_mg(mg)

    def pyfai_mg(mg):
        # MultiGeometry takes no dark: subtract it, and give the Poisson variance of the
        # raw counts (what integrate1d computes), to get the same outputs as ours
        return mg.integrate1d([(f - dark).astype(np.float32) for f in frames], npt, lst_mask=masks,
                              lst_flat=response.gain, polarization_factor=0.99, method=CSR,
                              lst_variance=[np.maximum(f, 1.0).astype(np.float32) for f in frames])

    t0 = time.perf_counter()
    integrators, mine = ours_cold()
    out["stitch_ours_cold_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mg, ref = pyfai_cold()
    out["stitch_pyfai_cold_s"] = time.perf_counter() - t0
    valid = ref.count > 0
    exact = float64_stitch(ponis, frames, masks, response.gain, dark, npt, unit, radial_range)
    out["stitch_bins_with_counts"] = int(valid.sum())
    out["stitch_max_rel_diff_intensity"] = _max_rel(mine.intensity, ref.intensity, valid)
    out["stitch_max_rel_diff_sigma"] = _max_rel(mine.sigma, ref.sigma, valid)
    for name, result in (("ours", mine), ("pyfai", ref)):
        out[f"stitch_{name}_max_rel_diff_vs_float64_intensity"] = _max_rel(result.intensity, exact[0], valid)
        out[f"stitch_{name}_max_rel_diff_vs_float64_sigma"] = _max_rel(result.sigma, exact[1], valid)
    t_ours = _best_per_call(lambda _: stitch(i.sums(f) for i, f in zip(integrators, frames)).result(), 2, repeats)
    t_pyfai = _best_per_call(lambda _: pyfai_mg(mg), 2, repeats)
    out["stitch_ours_ms"] = 1e3 * t_ours
    out["stitch_pyfai_ms"] = 1e3 * t_pyfai
    out["stitch_speedup_vs_pyfai"] = t_pyfai / t_ours
    out["stitch_cold_speedup_vs_pyfai"] = out["stitch_pyfai_cold_s"] / out["stitch_ours_cold_s"]
    integrators = mg = None  # freed before the memory passes
    _, out["stitch_ours_peak_mb"] = _traced_peak_mb(ours_cold)
    out["stitch_ours_cache_mb"] = corrected_integration.splitting_cache_bytes() / 2**20
    out["stitch_cache_bound_mb"] = corrected_integration.SPLITTING_CACHE_BYTES / 2**20
    _, out["stitch_pyfai_peak_mb"] = _traced_peak_mb(pyfai_cold)
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


def _rss_mb() -> float:
    """Resident memory of this process (MB), from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def live(seconds: float = 120.0, frames_per_event: int = 10, frame_rate: float = 30.0,
         warmup_s: float = 20.0, detector: str = "Pilatus2MCdTe", paced: bool = False,
         run_seconds: float | None = None) -> dict:
    """The whole live chain at a detector frame rate, on pre-rendered frames.

    A RunEngine counts glass with the simulated detector (``frames_per_event`` frames of
    ``1/frame_rate`` s per trigger, pre-rendered so that rendering is not timed), I0 and
    It, for ``seconds`` (s) after ``warmup_s`` (s): as fast as the chain allows, or, with
    ``paced``, no faster than the detector would deliver them (``frame_rate`` Hz). Every
    frame is written to HDF5, announced, read back, dark-subtracted and masked; each
    event's frames are integrated in q and 2theta, put on the absolute scale, and
    raw and derived documents are spooled and uploaded to an embedded Tiled catalog.
    With ``run_seconds`` (s) the time is split into consecutive runs of that length,
    each with its darks, as a beamline's successive scans; otherwise it is one run.
    Prints the frame rate sustained, the growth of resident memory after the warm-up
    (the soak: ``--seconds 600 --paced --run-seconds 60``) and the depth of the
    writers' upload queue.
    """
    import tempfile

    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    from .plans.counting import stage_motors, take_darks
    from .session import build_session

    out: dict[str, float | int | str] = {"detector": detector, "frames_per_event": frames_per_event,
                                         "target_frame_rate_hz": frame_rate, "paced": str(paced)}
    with tempfile.TemporaryDirectory(prefix="xrd-bluesky-bench-") as tmp:
        session = build_session(directory=tmp, config=BeamlineConfig(detector=detector))
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
                    samples.append((time.perf_counter(), (len(samples) + 1) * frames_per_event, _rss_mb(),
                                    sum(w.depth for w in session.writers), len(primary)))

            stage = bl.stage
            position = (stage.x.position, stage.y.position, stage.distance.position)
            md = {"purpose": "measurement", "stage_motors": stage_motors(stage), "positions_mm": [position],
                  "dark_frames": True, "energy_keV": float(bl.source.energy.get()),
                  "sample": bl.sample_changer.sample().metadata(), "plan_name": "bench_live"}
            detectors = [det, bl.i0, bl.it]
            motors = [stage.x, stage.y, stage.distance]

            trigger_period = frames_per_event / frame_rate if paced else 0.0
            lags: list[float] = []  # paced: how far (s) each trigger came after the detector's clock

            @bpp.run_decorator(md=md)
            def one_run(until: float):
                yield from bpp.stage_wrapper(take_darks(detectors, bl.source.shutter), detectors)

                def counts():
                    # a detector delivers frames on its own clock: a slow trigger must be
                    # made up by the next ones, or the chain has fallen behind (lag)
                    due = time.perf_counter()
                    while due < until:
                        lags.append(time.perf_counter() - due)
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
            out["runs"] = len(list(session.catalog.raw))
            t = np.array([s[0] for s in samples])
            n = np.array([s[1] for s in samples])
            rss = np.array([s[2] for s in samples])
            after = t >= t[0] + warmup_s
            out["frames"] = int(n[-1])
            out["seconds_measured"] = float(t[-1] - t[after][0])
            out["frame_rate_hz"] = float((n[-1] - n[after][0]) / (t[-1] - t[after][0]))
            # within runs: without the darks and run starts and stops between them
            run = np.array([s[4] for s in samples])
            spans = [(t[after & (run == r)], n[after & (run == r)]) for r in np.unique(run[after])]
            spans = [(tr[-1] - tr[0], nr[-1] - nr[0]) for tr, nr in spans if len(tr) > 1]
            out["frame_rate_within_runs_hz"] = float(sum(f for _, f in spans) / sum(d for d, _ in spans))
            if paced:
                out["max_lag_behind_detector_s"] = float(max(lags))
            out["rss_after_warmup_mb"] = float(rss[after][0])
            out["rss_end_mb"] = float(rss[-1])
            out["rss_growth_after_warmup_mb"] = float(rss[-1] - rss[after][0])
            depth = np.array([s[3] for s in samples])
            out["writer_queue_max_documents"] = max(w.max_depth for w in session.writers)
            out["writer_queue_mean_documents_after_warmup"] = float(depth[after].mean())
            out["writer_queue_bound_documents"] = sum(w.max_queued for w in session.writers)
            out["spool_files_left"] = len(list(session.catalog.spool_dir.rglob("*.jsonl")))
            derived = session.catalog.processed.values().last()
            out["derived_exit_status"] = (derived.stop or {}).get("exit_status", "none")
            out["derived_absolute_events"] = int(len(derived["absolute"].read()["intensity"]))
        finally:
            session.close()
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


def fits(n: int = 2000, points: int = 200) -> dict:
    """Single-peak fits per second (``points`` points, Poisson noise), ours vs the
    notebook method it replaces (``scipy.optimize.minimize`` on an L2 cost) and vs
    ``scipy.optimize.curve_fit``, all on the same patterns."""
    from scipy.optimize import curve_fit, minimize

    from .science.peak_fitting import FOUR_LN2, fit_peak

    rng = np.random.default_rng(0)
    x = np.linspace(9.0, 11.0, points)
    truth = 400.0 * np.exp(-FOUR_LN2 * ((x - 10.03) / 0.12) ** 2) + 60.0
    ys = [rng.poisson(truth).astype(float) for _ in range(n)]
    sigmas = [np.sqrt(np.maximum(y, 1.0)) for y in ys]

    def gauss(x, c, w, h, b):
        return h * np.exp(-FOUR_LN2 * ((x - c) / w) ** 2) + b

    p0 = [x[np.argmax(ys[0])], 0.2, ys[0].max() - 60.0, 60.0]
    out: dict[str, float | int] = {"points": points, "fits": n}
    for model in ("gaussian", "pseudo-voigt"):
        fit_peak(x, ys[0], (9.0, 11.0), sigma=sigmas[0], model=model)  # compile
        t = _best_per_call(lambda i: fit_peak(x, ys[i], (9.0, 11.0), sigma=sigmas[i], model=model), n, 2)
        out[f"fits_per_second_{model.replace('-', '_')}"] = 1.0 / t
    m = max(n // 10, 1)
    t = _best_per_call(lambda i: curve_fit(gauss, x, ys[i], p0=p0, sigma=sigmas[i], absolute_sigma=True), m, 2)
    out["fits_per_second_scipy_curve_fit"] = 1.0 / t
    t = _best_per_call(lambda i: minimize(lambda p: np.sum((gauss(x, *p) - ys[i]) ** 2), p0,
                                          method="Nelder-Mead"), m, 1)
    out["fits_per_second_scipy_minimize_l2"] = 1.0 / t
    out["speedup_vs_curve_fit"] = out["fits_per_second_gaussian"] / out["fits_per_second_scipy_curve_fit"]
    out["speedup_vs_minimize_l2"] = out["fits_per_second_gaussian"] / out["fits_per_second_scipy_minimize_l2"]
    out.update(_live_fit_share())
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


def _live_fit_share(detector: str = "Pilatus2MCdTe", events: int = 5) -> dict:
    """Per event of a strain series (Mg on a 2M, 3 peaks, 36 sectors): the time of the
    live peak fits against that of the event's integrations (q and 2theta patterns and
    the cake, as :class:`LiveIntegration` runs them)."""
    from event_model import compose_run

    from .callbacks.derived import data_keys
    from .callbacks.peak_fits import LivePeakFits
    from .plans.strain_series import STRAIN_INTEGRATION

    config = BeamlineConfig(detector=detector)
    poni = config.true_geometry().reference
    response = DetectorResponse.simulate(detector, 1)
    mg = default_library()["Mg"].under_load(3e-3)
    rng = np.random.default_rng(2)
    photons = expected_photons(mg, poni, flux_ph_s=1e11, exposure_s=1.0, beamstop=config.beamstop)
    frames = [detect(photons, response, 1.0, rng) for _ in range(events)]
    npt, (npt_cake, npt_azim), split = STRAIN_INTEGRATION["npt"], STRAIN_INTEGRATION["cake"], STRAIN_INTEGRATION["split"]
    kw = dict(gain=response.gain, split=split)
    integrators = {"q": CorrectedIntegrator(poni, npt=npt, unit="q_nm^-1", **kw),
                   "2th": CorrectedIntegrator(poni, npt=npt, unit="2th_deg", **kw),
                   "cake": CorrectedIntegrator(poni, npt=npt_cake, npt_azim=npt_azim, unit="q_nm^-1", **kw)}
    results = [{k: integ.integrate(f) for k, integ in integrators.items()} for f in frames]
    t_integrate = _best_per_call(lambda i: [integ.sums(frames[i]) for integ in integrators.values()], events, 2)

    bundle = compose_run(metadata={"energy_keV": config.energy_keV, "scan_keys": [],
                                   "peaks": {"phase": "Mg", "hkl": [[1, 0, 0], [0, 0, 2], [1, 0, 1]],
                                             "model": "pseudo-voigt"}})
    cos2chi, sin2chi = integrators["cake"].azimuthal_moments

    def event_data(i):
        tth, c = results[i]["2th"], results[i]["cake"]
        return ({"two_theta": tth.radial, "intensity_2theta": tth.intensity, "sigma_2theta": tth.sigma,
                 "parent_seq_num": i + 1},
                {"q": c.radial, "azimuth": c.azimuthal, "intensity": c.intensity, "sigma": c.sigma,
                 "cos2chi": cos2chi, "sin2chi": sin2chi, "parent_seq_num": i + 1})

    descriptors = [bundle.compose_descriptor(name=name, data_keys=data_keys(data, {}))
                   for name, data in zip(("primary", "cake"), event_data(0))]
    docs = [("start", bundle.start_doc)] + [("descriptor", d.descriptor_doc) for d in descriptors]
    for i in range(events):
        for descriptor, data in zip(descriptors, event_data(i)):
            docs.append(("event", descriptor.compose_event(data=data, timestamps={k: 0.0 for k in data}, seq_num=i + 1)))
    best = np.inf
    for _ in range(2):
        fitter = LivePeakFits(lambda name, doc: None)
        for name, doc in docs[:3]:
            fitter(name, doc)
        t0 = time.perf_counter()
        for name, doc in docs[3:]:
            fitter(name, doc)
        best = min(best, (time.perf_counter() - t0) / events)
    return {"live_event_integration_ms": 1e3 * t_integrate, "live_event_peak_fits_ms": 1e3 * best,
            "live_event_fits_over_integration": best / t_integrate}


def outage(repeats: int = 2, num: int = 4, detector: str = "Pilatus1M") -> dict:
    """Scan time with the catalog server up, killed mid-scan, and down from the start.

    Each scenario serves a fresh data directory with ``xrd-bluesky serve`` (a child
    process), counts CeO2 ``num`` times at three detector positions with live
    integration, and times the plan; "killed" SIGKILLs the server at the scan's third
    event, "down" before the scan (after the session started). After each outage the
    server is restarted and ``sync`` back-fills the spool; the raw run's event count is
    checked. The reference is bluesky-tiled-plugins' ``TiledWriter`` subscribed directly
    (what the session did before the spool), with the server killed the same way.
    Prints the best time of ``repeats`` per scenario (s) and the ratios to "up".
    """
    import secrets
    import tempfile

    from bluesky_tiled_plugins import TiledWriter

    from .plans import multi_position_count
    from .session import build_session
    from .store import open_catalog
    from .store.server import API_KEY_VARIABLE, ServerProcess
    from .store.sync import sync

    key = os.environ.setdefault(API_KEY_VARIABLE, secrets.token_hex(16))
    positions = [(0, 0, 300), (20, -15, 300), (-20, 15, 300)]

    def scan(scenario: str, reference: bool = False) -> float:
        with tempfile.TemporaryDirectory(prefix="xrd-bluesky-outage-") as tmp:
            server = ServerProcess(tmp, key)
            session = build_session(directory=tmp, uri=server.uri, config=BeamlineConfig(detector=detector, seed=7))
            bl = session.beamline
            bl.sample_changer.slot.put("CeO2")
            RE = session.RE
            if reference:
                RE.unsubscribe(0)  # the spooling raw writer, subscribed first
                RE.subscribe(TiledWriter(session.catalog.raw))
            events: list[str] = []

            def kill_at_third_event(name, doc):
                if name == "event":
                    events.append(doc["uid"])
                    if scenario == "killed" and len(events) == 3:
                        server.kill()

            RE.subscribe(kill_at_third_event)
            if scenario == "down":
                server.kill()
            t0 = time.perf_counter()
            try:
                uid, = RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, positions, num=num,
                                               shutter=bl.source.shutter, energy=bl.source.energy,
                                               sample=bl.sample_changer.sample().metadata()))
            except Exception as exc:  # the reference writer takes the scan down
                print(f"  reference TiledWriter, server {scenario}: scan aborted after "
                      f"{time.perf_counter() - t0:.1f} s ({type(exc).__name__})")
                return time.perf_counter() - t0
            elapsed = time.perf_counter() - t0
            session.close()
            if scenario != "up":
                with ServerProcess(tmp, key) as restarted:
                    catalog = open_catalog(restarted.uri, directory=tmp)
                    sync(catalog, catalog.spool_dir)
                    n = len(catalog.raw[uid]["primary"].read()["I0_counts"])
                    catalog.close()
                assert n == 3 * num, f"sync back-filled {n} of {3 * num} events"
            else:
                server.kill()
            return elapsed

    out: dict[str, float] = {}
    for scenario in ("up", "killed", "down"):
        out[f"scan_{scenario}_s"] = min(scan(scenario) for _ in range(repeats))
    out["ratio_killed_to_up"] = out["scan_killed_s"] / out["scan_up_s"]
    out["ratio_down_to_up"] = out["scan_down_s"] / out["scan_up_s"]
    out["reference_up_s"] = scan("up", reference=True)
    out["reference_killed_s"] = scan("killed", reference=True)
    for name, value in out.items():
        print(f"{name}: {value:.4g}")
    return out


def _cpu_s() -> tuple[float, float]:
    """CPU time (s, user + system) of this process, and of its children that have ended."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


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

    from .plans.counting import multi_position_count
    from .session import build_session
    from .store.parallel_replay import find_runs, replay_runs
    from .store.replay import replay

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
                cpu0, t0 = _cpu_s(), time.perf_counter()
                outcomes = replay_runs(catalog, uids, workers=n)
                timings[label] = time.perf_counter() - t0
                parent_cpu, workers_cpu = (after - before for after, before in zip(_cpu_s(), cpu0))
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
                        worst = max(worst, _max_rel(y, x, both) if both.any() else 0.0)
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


#: Q step (1/A) of the direct sine integral the PDF benchmark holds our transform against.
DIRECT_Q_STEP = 0.0005


def pdf(points: int = 3000, repeats: int = 50) -> dict:
    """G(r) of a ``points``-point pattern of the simulator's Ni: the whole reduction
    (ours, an FFT sine transform) against the direct sine integral on the same F(Q) (its
    transform step alone), in time and agreement; and, when the real data
    (``../shared/realdata/pdfstream_ni``) is beside the clone, our G(r) of the Ni
    pattern against the G(r) PDFgetX3 made from it."""
    from .science.pair_distribution import PDFConfig, pdf_from_pattern
    from .science.samples import default_library

    config = PDFConfig("Ni", rpoly=0.9, qmin=0.5, qmax=24.0, qmaxinst=25.0, rmin=0.0, rmax=30.0, rstep=0.01)
    q = np.linspace(0.3, 25.0, points)
    intensity = default_library()["Ni"].cross_section_q(q)
    result = pdf_from_pattern(q, intensity, config)
    ours = _best_per_call(lambda _: pdf_from_pattern(q, intensity, config), repeats, 5)
    fine = np.arange(config.qmin, config.qmax + DIRECT_Q_STEP / 2, DIRECT_Q_STEP)

    def direct(_):  # the defining integral, trapezoids on a fine Q grid, F linear between the points
        f = np.interp(fine, result.q, result.fq)
        return (2 / np.pi) * np.trapezoid(np.sin(np.outer(result.r, fine)) * f, fine, axis=1)

    reference = _best_per_call(direct, 1, 2)
    g_direct = direct(0)
    out: dict[str, float | int] = {
        "points": points, "r_points": len(result.r), "pdf_ms_per_pattern": ours * 1e3,
        "direct_transform_ms_per_pattern": reference * 1e3, "speedup_vs_direct_transform": reference / ours,
        "max_abs_diff_vs_direct_rel": float(np.max(np.abs(result.gr - g_direct)) / np.max(np.abs(g_direct)))}
    out.update(_pdfgetx3_agreement())
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


def _pdfgetx3_agreement() -> dict:
    """Our G(r) of the real Ni pattern vs PDFgetX3's, with PDFgetX3's configuration
    (empty when the real data is not beside the clone): the Pearson correlation over
    1.5-30 A, the first ten peaks' positions (PDFgetX3's peaks above 1 1/A^2) and the
    scale between the two."""
    from pathlib import Path

    from .science.pair_distribution import PDFConfig, pdf_from_pattern, peak_positions

    folder = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "pdfstream_ni"
    if not folder.exists():
        return {}
    q, intensity = np.loadtxt(folder / "Ni_chi_file.chi", comments="#").T
    text = (folder / "Ni_gr_file.gr").read_text(encoding="utf-8").split("#### start data")[1]
    r_ref, g_ref = np.loadtxt([line for line in text.splitlines() if line.strip() and not line.startswith("#")]).T
    config = PDFConfig("Ni", rpoly=2.0, qmaxinst=25.0, qmin=0.0, qmax=24.0, rmin=0.0, rmax=60.0, rstep=0.01)
    result = pdf_from_pattern(q, intensity, config)
    window = (r_ref >= 1.5) & (r_ref <= 30.0)
    reference = peak_positions(r_ref, g_ref, min_height=1.0)
    reference = reference[reference > 1.5][:10]
    ours = peak_positions(result.r, result.gr)
    errors = [ours[np.argmin(np.abs(ours - p))] - p for p in reference]
    scale = float(np.dot(result.gr[window], g_ref[window]) / np.dot(result.gr[window], result.gr[window]))
    return {"ni_pearson_vs_pdfgetx3_1.5_30A": float(np.corrcoef(result.gr[window], g_ref[window])[0, 1]),
            "ni_first10_peaks_max_abs_diff_A": float(np.max(np.abs(errors))),
            "ni_first_peak_diff_A": float(errors[0]),
            "ni_pdfgetx3_over_ours_scale": scale, "ni_flags": "; ".join(result.flags)}
