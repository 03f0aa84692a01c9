"""``xrd-bluesky bench stitch``: a detector on a 2theta arm, ours vs pyFAI's MultiGeometry (and float64)."""

from __future__ import annotations

import time
from dataclasses import replace

import numba
import numpy as np

from xrd_bluesky.science.calibration.position_models import (
    ArmModel,
    ArmPosition,
)
from xrd_bluesky.science.detector_pixels import pixel_geometry
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction.corrected_integration import (
    CorrectedIntegrator,
    pixel_splitting,
)
from xrd_bluesky.science.reduction.multi_geometry import covered_radial_range, stitch
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.sim_devices.beamline import BeamlineConfig

from .common import CSR, best_per_call, max_rel, traced_peak_mb

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
    ``reference``, at each arm angle (deg) (:class:`~xrd_bluesky.science.calibration.position_models.ArmModel`)."""
    model = ArmModel(reference, plane="vertical")
    return [model.poni_at(ArmPosition(float(a))) for a in angles_deg]


def float64_stitch(ponis: list[Poni], frames: list[np.ndarray], masks: list[np.ndarray], gain: np.ndarray,
                   dark: np.ndarray, npt: int, unit: str, radial_range: tuple[float, float],
                   polarization_factor: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """Intensity and sigma of the stitched pattern, the definition of
    :mod:`~xrd_bluesky.science.reduction.multi_geometry` evaluated plainly in float64 (scipy
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

    from xrd_bluesky.science.reduction import corrected_integration

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
    out["stitch_max_rel_diff_intensity"] = max_rel(mine.intensity, ref.intensity, valid)
    out["stitch_max_rel_diff_sigma"] = max_rel(mine.sigma, ref.sigma, valid)
    for name, result in (("ours", mine), ("pyfai", ref)):
        out[f"stitch_{name}max_rel_diff_vs_float64_intensity"] = max_rel(result.intensity, exact[0], valid)
        out[f"stitch_{name}max_rel_diff_vs_float64_sigma"] = max_rel(result.sigma, exact[1], valid)
    t_ours = best_per_call(lambda _: stitch(i.sums(f) for i, f in zip(integrators, frames)).result(), 2, repeats)
    t_pyfai = best_per_call(lambda _: pyfai_mg(mg), 2, repeats)
    out["stitch_ours_ms"] = 1e3 * t_ours
    out["stitch_pyfai_ms"] = 1e3 * t_pyfai
    out["stitch_speedup_vs_pyfai"] = t_pyfai / t_ours
    out["stitch_cold_speedup_vs_pyfai"] = out["stitch_pyfai_cold_s"] / out["stitch_ours_cold_s"]
    integrators = mg = None  # freed before the memory passes
    _, out["stitch_ours_peak_mb"] = traced_peak_mb(ours_cold)
    out["stitch_ours_cache_mb"] = corrected_integration.splitting_cache_bytes() / 2**20
    out["stitch_cache_bound_mb"] = corrected_integration.SPLITTING_CACHE_BYTES / 2**20
    _, out["stitch_pyfai_peak_mb"] = traced_peak_mb(pyfai_cold)
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out
