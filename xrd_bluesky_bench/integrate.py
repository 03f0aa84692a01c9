"""``xrd-bluesky bench integrate``: per-frame 1D integration, cake and MultiGeometry, ours vs pyFAI's CSR."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numba
import numpy as np

from xrd_bluesky.science.detector_pixels import pixel_geometry
from xrd_bluesky.science.geometry import Poni, StagePosition
from xrd_bluesky.science.reduction.corrected_integration import CorrectedIntegrator
from xrd_bluesky.science.reduction.multi_geometry import covered_radial_range, stitch
from xrd_bluesky.science.sim.image_formation import DetectorResponse
from xrd_bluesky.science.units import wavelength_m
from xrd_bluesky.sim_devices.beamline import BeamlineConfig

from .common import CSR, best_per_call, glass_frames, max_rel
from .stitch import reference_integrators

#: Detector-stage positions (x, y, distance; mm) of the MultiGeometry benchmark.
MG_POSITIONS = [(0, 0, 300), (40, -30, 280), (-35, 40, 320), (60, 50, 300), (-50, -45, 340)]
#: Azimuthal bins (sectors) of the cake benchmark (a strain series' cake has 36).
CAKE_SECTORS = 36


def compare(name: str, ours: Callable[[int], object], reference: Callable[[int], object], n: int, repeats: int,
            out: dict, agreement_reference: Callable[[int], object] | None = None) -> None:
    """Into ``out``: the largest relative differences of intensity and sigma of
    ``ours(0)`` from ``reference(0)`` (or ``agreement_reference(0)``, when pyFAI needs
    other arguments to compute the same quantity) over the bins with valid pixels, and
    the best mean times (ms) of ``n`` calls of each and their ratio, as ``name_*``."""
    ref, mine = (agreement_reference or reference)(0), ours(0)
    valid = ref.count > 0
    out[f"{name}_max_rel_diff_intensity"] = max_rel(mine.intensity, ref.intensity, valid)
    out[f"{name}_max_rel_diff_sigma"] = max_rel(mine.sigma, ref.sigma, valid)
    t_pyfai = best_per_call(reference, n, repeats)
    t_ours = best_per_call(ours, n, repeats)
    out[f"{name}_pyfai_ms"] = 1e3 * t_pyfai
    out[f"{name}_ours_ms"] = 1e3 * t_ours
    out[f"{name}_speedup_vs_pyfai"] = t_pyfai / t_ours


def integrate(detector: str = "Pilatus2MCdTe", n_frames: int = 8, npt: int = 2000, repeats: int = 5) -> dict:
    """Per-frame 1D integration, per-frame cake and 5-position stitching, ours vs pyFAI's CSR.

    All with pixel splitting (bbox), dark, gain, mask (gaps + beamstop), polarization
    (0.99), solid angle (absolute) and Poisson errors, ``npt`` bins in q (1/nm); the
    cake has :data:`CAKE_SECTORS` azimuthal bins. pyFAI's 2D engine adds the dark to
    its Poisson variance (its 1D engine does not, nor do we): the cake's agreement is
    checked with pyFAI given our variance ``max(raw, 1)``, its time is that of its own
    Poisson model. Returns and prints the numbers.
    """
    config = BeamlineConfig(detector=detector)
    model = config.true_geometry().with_wavelength(wavelength_m(config.energy_keV))
    response = DetectorResponse.simulate(detector, 1, pixel_rms=config.gain_pixel_rms,
                                         module_rms=config.gain_module_rms)
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
    frames = glass_frames(poni, response, n_frames, 2)
    ref_kw = corrections(poni)
    ai = poni.integrator()
    t0 = time.perf_counter()
    ours = CorrectedIntegrator(poni, npt=npt, mask=ref_kw["mask"], gain=response.gain, dark=dark,
                               max_count=response.max_count)
    ours.integrate(frames[0])
    out["ours_setup_s"] = time.perf_counter() - t0

    def pyfai_1d(i):
        return ai.integrate1d_ng(frames[i % n_frames], npt, unit="q_nm^-1", method=CSR, error_model="poisson", **ref_kw)

    compare("integrate1d", lambda i: ours.integrate(frames[i % n_frames]), pyfai_1d, n_frames, repeats, out)

    # -- cake ------------------------------------------------------------------
    t0 = time.perf_counter()
    cake = CorrectedIntegrator(poni, npt=npt, npt_azim=CAKE_SECTORS, mask=ref_kw["mask"], gain=response.gain,
                               dark=dark, max_count=response.max_count)
    cake.integrate(frames[0])
    out["cake_ours_setup_s"] = time.perf_counter() - t0

    def pyfai_cake(i, **variance):
        return ai.integrate2d_ng(frames[i % n_frames], npt, CAKE_SECTORS, unit="q_nm^-1", method=CSR, **variance,
                                 **ref_kw)

    compare("cake", lambda i: cake.integrate(frames[i % n_frames]), lambda i: pyfai_cake(i, error_model="poisson"),
            n_frames, repeats, out, lambda i: pyfai_cake(i, variance=np.maximum(frames[i % n_frames], 1.0)))

    # -- MultiGeometry ---------------------------------------------------------
    from pyFAI.multi_geometry import MultiGeometry

    ponis = [model.poni_at(StagePosition(*p)) for p in MG_POSITIONS]
    mg_frames = [glass_frames(p, response, 1, 10 + k)[0] for k, p in enumerate(ponis)]
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

    compare("multigeometry", ours_mg, pyfai_mg, 2, repeats, out)
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out
