"""Ring d-spacings against azimuth from a cake, lattice strain along and across a load,
and the geometry refined on the rings of an internal standard — for frames of a
loaded specimen (e.g. steel under tension with CeO2 dusted on it, GSAS-II's
2DStrain tutorial).

The cake is the package's corrected integration (:class:`CorrectedIntegrator`, q in
1/nm, ``split="no"``: each pixel in one bin, so neighbouring bins are independent
and the peak fits' errors honest). Each ring is fitted in every sector as the live
analysis does (:mod:`xrd_bluesky.callbacks.peak_fits`): :func:`fit_peak` in the
ring's q window, :func:`lattice_strain` in ``q_nm^-1``, the sector's cos^2 to the
load from the pixels under the peak (:func:`peak_cos2`), and
:func:`directional_strain` for the strain along and across the load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares

from ...errors import GeometryError
from ..crystal import Atom, Crystal
from ..geometry import Poni
from ..units import two_theta_rad
from .corrected_integration import CorrectedIntegrator
from .directional_strain import DirectionalStrain, directional_strain, sector_cos2
from .peak_fitting import PeakResult, fit_peak, lattice_strain
from .peak_specs import PHASES, PeakSpec, hkl_label

#: Radial bins per pixel of radius: bins of half a pixel hold tens of pixels each
#: over a sector's arc (split "no"), and a peak a few pixels wide spans several.
BINS_PER_PIXEL = 2.0
#: Margin (1/nm) of the cake's radial range beyond the outermost windows.
Q_MARGIN_NM = 0.5


def ferrite() -> Crystal:
    """bcc iron (alpha-Fe, Im-3m), a = 2.8665 A (room temperature)."""
    return Crystal("ferrite", 2.8665, 2.8665, 2.8665, atoms=(Atom("Fe", (0, 0, 0)), Atom("Fe", (.5, .5, .5))))


def austenite() -> Crystal:
    """fcc iron (gamma-Fe, Fm-3m), a = 3.59 A (austenitic steel at room temperature)."""
    positions = ((0, 0, 0), (0, .5, .5), (.5, 0, .5), (.5, .5, 0))
    return Crystal("austenite", 3.59, 3.59, 3.59, atoms=tuple(Atom("Fe", p) for p in positions))


#: Phases whose reflections the strain analysis names by hkl: those of
#: :data:`~xrd_bluesky.science.reduction.peak_specs.PHASES` and the two phases of steel.
STRAIN_PHASES = {**PHASES, "ferrite": ferrite, "austenite": austenite}


def reflection_specs(reflections: list[tuple[str, tuple[int, int, int]]], wavelength_m: float,
                     half_width_deg: float) -> list[PeakSpec]:
    """Peak windows (deg 2theta) of reflections ``(phase, hkl)`` of :data:`STRAIN_PHASES`,
    labelled e.g. ``ferrite_110``, with their tabulated d (A).

    Raises
    ------
    KeyError
        An unknown phase (the caller names the known ones).
    ValueError
        hkl (0, 0, 0), or a reflection beyond 2theta = 180 deg.
    """
    specs = []
    for phase, hkl in reflections:
        h = np.asarray(hkl, float)
        if not h.any():
            raise ValueError("hkl (0, 0, 0) is not a reflection")
        d = 1.0 / math.sqrt(float(h @ STRAIN_PHASES[phase]().reciprocal_metric() @ h))
        tth = math.degrees(float(two_theta_rad(d, wavelength_m)))
        if math.isnan(tth):
            raise ValueError(f"reflection {hkl} of {phase} (d = {d:.4f} A) is beyond 2theta = 180 deg")
        specs.append(PeakSpec(hkl_label(phase, hkl), (tth - half_width_deg, tth + half_width_deg), d))
    return specs


def q_window_nm(spec: PeakSpec, wavelength_m: float) -> tuple[float, float]:
    """The window of ``spec`` in q (1/nm), as the live sector fits convert it."""
    return tuple(4e-9 * math.pi * math.sin(math.radians(t) / 2) / wavelength_m for t in spec.window_deg)


@dataclass(frozen=True)
class Cake:
    """A cake: q bin centres (1/nm), sector azimuths (deg, pyFAI chi), intensity and
    sigma (sectors x q) and each bin's pixel-mean cos(2 chi), sin(2 chi)."""

    q_nm: np.ndarray
    azimuth_deg: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    cos2chi: np.ndarray
    sin2chi: np.ndarray


def cake_integrator(poni: Poni, specs: list[PeakSpec], sectors: int, *, mask: np.ndarray | None = None,
                    polarization_factor: float | None = 0.99, max_count: float | None = None) -> CorrectedIntegrator:
    """The cake integrator for the windows of ``specs``: q from below the first to above
    the last window, :data:`BINS_PER_PIXEL` bins per pixel of radius, ``sectors``
    azimuthal sectors, no pixel splitting."""
    windows = np.array([q_window_nm(s, poni.wavelength) for s in specs])
    low, high = max(windows.min() - Q_MARGIN_NM, 1e-3), windows.max() + Q_MARGIN_NM
    det = poni.detector_model()
    q_per_pixel = 2e-9 * math.pi / poni.wavelength * min(det.pixel1, det.pixel2) / poni.dist
    npt = max(50, math.ceil((high - low) / q_per_pixel * BINS_PER_PIXEL))
    return CorrectedIntegrator(poni, npt=npt, npt_azim=sectors, unit="q_nm^-1", radial_range=(low, high), mask=mask,
                               polarization_factor=polarization_factor, max_count=max_count, split="no")


def integrate_cake(integrator: CorrectedIntegrator, frame: np.ndarray, source: str = "frame") -> Cake:
    """The cake of ``frame``."""
    result = integrator.sums(frame, source).result()
    cos2chi, sin2chi = integrator.azimuthal_moments
    return Cake(result.radial, result.azimuthal, result.intensity, result.sigma, cos2chi, sin2chi)


@dataclass(frozen=True)
class RingSectors:
    """Fits of one ring in every sector: d (A) with 1-sigma errors, the fits
    (NaN d where a fit failed, its reason in ``fits``) and the sector azimuths (deg)."""

    label: str
    azimuth_deg: np.ndarray
    d_A: np.ndarray
    d_sigma_A: np.ndarray
    fits: list[PeakResult]

    @property
    def success(self) -> np.ndarray:
        return np.array([f.success for f in self.fits])

    def failures(self) -> str:
        """The failed sectors and why, ``"12.5 deg: reason; ..."``."""
        return "; ".join(f"{a:.1f} deg: {f.reason}" for a, f in zip(self.azimuth_deg, self.fits) if not f.success)


def fit_ring(cake: Cake, spec: PeakSpec, wavelength_m: float, *, model: str = "gaussian",
             background: str = "constant") -> RingSectors:
    """Fit the ring of ``spec`` in every sector of ``cake``."""
    window = q_window_nm(spec, wavelength_m)
    fits = [fit_peak(cake.q_nm, i, window, sigma=e, model=model, background=background)
            for i, e in zip(cake.intensity, cake.sigma)]
    d = [lattice_strain(f, wavelength_m, 1.0, "q_nm^-1") for f in fits]
    return RingSectors(spec.label, cake.azimuth_deg, np.array([s.d_A for s in d]), np.array([s.d_sigma_A for s in d]),
                       fits)


def ring_mean_d0(ring: RingSectors) -> tuple[float, float]:
    """d0 (A) as GSAS-II's "d-zero": the plain mean of the sectors' d, and its 1-sigma
    error from their scatter (standard error of the mean). Unweighted: the sectors'
    d differ by texture and intergranular strain far beyond their fit errors, so
    inverse-variance weights would let a few sectors stand for the ring."""
    d = ring.d_A[np.isfinite(ring.d_A)]
    if d.size < 2:
        return float("nan"), float("nan")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def peak_cos2(q: np.ndarray, window: tuple[float, float], intensity: np.ndarray, cos2: np.ndarray,
              fits: list[PeakResult]) -> np.ndarray:
    """Per sector, cos^2(chi - chi_L) of the pixels under the fitted peak: the bins'
    values in the window weighted by their counts above the fitted background (the
    file command's and the live analysis's, :mod:`xrd_bluesky.callbacks.peak_fits`)."""
    inside = (q >= window[0]) & (q <= window[1])
    out = np.full(len(fits), np.nan)
    for i, fit in enumerate(fits):
        if fit.success:
            w = np.clip(np.nan_to_num(intensity[i, inside] - fit.background), 0.0, None)
            c = cos2[i, inside]
            good = np.isfinite(c) & (w > 0)
            out[i] = np.sum(w[good] * c[good]) / np.sum(w[good]) if good.any() else np.nan
    return out


@dataclass(frozen=True)
class RingStrain:
    """Strain of one ring along and across the load against d0 (A).

    ``directional`` is :func:`directional_strain`'s fit with the sectors' own errors
    (its ``reduced_chi2`` measures the scatter about the cos^2 model against them);
    ``loading_sigma``/``transverse_sigma`` are its errors multiplied by
    sqrt(max(1, reduced chi2)) — consistent with the sectors' scatter about the model
    — and, for a ring-mean d0, the d0 error added in quadrature (it is common to all
    sectors, so the fit cannot average it down).
    """

    label: str
    d0_A: float
    directional: DirectionalStrain
    loading_sigma: float
    transverse_sigma: float


def ring_strain(ring: RingSectors, cake: Cake, spec: PeakSpec, wavelength_m: float, loading_azimuth_deg: float,
                d0_A: np.ndarray, d0_sigma_A: np.ndarray, *, common_d0: bool) -> RingStrain:
    """Per-sector strain of ``ring`` against d0 (one per sector) and its fit along and
    across the load (azimuth in pyFAI's chi convention, deg).

    ``common_d0``: d0 is one value for the ring (its error then enters once, after
    the fit) rather than one per sector (each sector's error carries its own).
    """
    sector_sigma = np.zeros_like(d0_sigma_A) if common_d0 else d0_sigma_A
    strains = [lattice_strain(f, wavelength_m, float(a), "q_nm^-1", d0_sigma_A=float(b))
               for f, a, b in zip(ring.fits, d0_A, sector_sigma)]
    cos2 = sector_cos2(cake.cos2chi, cake.sin2chi, loading_azimuth_deg)
    weights = peak_cos2(cake.q_nm, q_window_nm(spec, wavelength_m), cake.intensity, cos2, ring.fits)
    fit = directional_strain(weights, np.array([s.strain for s in strains]),
                             np.array([s.strain_sigma for s in strains]))
    scale = math.sqrt(max(1.0, fit.reduced_chi2)) if fit.success else float("nan")
    d0, d0_rel = float(np.nanmean(d0_A)), float(d0_sigma_A[0] / d0_A[0]) if common_d0 else 0.0
    return RingStrain(ring.label, d0, fit, math.hypot(fit.loading_sigma * scale, (1 + fit.loading) * d0_rel),
                      math.hypot(fit.transverse_sigma * scale, (1 + fit.transverse) * d0_rel))


# --------------------------------------------------------------------------- geometry on an internal standard

@dataclass(frozen=True)
class RingRefinement:
    """A geometry refined on the rings of an internal standard: the geometry, the rms
    2theta residual (deg) of its control points and how many points on how many rings."""

    poni: Poni
    residual_deg: float
    points: int
    rings: int


def _pixels_at(poni: Poni, tth_rad: np.ndarray, chi_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (row, column; pyFAI's d1, d2) where ``poni`` puts 2theta and chi
    (rad): Newton's method on pyFAI's own mapping, from the flat-detector guess."""
    ai = poni.integrator()
    f2 = poni.fit2d()
    det = poni.detector_model()
    r = poni.dist * np.tan(tth_rad)
    rows = f2["centerY"] + r * np.sin(chi_rad) / det.pixel1
    cols = f2["centerX"] + r * np.cos(chi_rad) / det.pixel2
    for _ in range(6):
        t0, c0 = ai.tth(rows, cols), ai.chi(rows, cols)
        jac = np.empty((rows.size, 2, 2))
        for k, (dr, dc) in enumerate(((0.5, 0.0), (0.0, 0.5))):
            jac[:, 0, k] = (ai.tth(rows + dr, cols + dc) - t0) / 0.5
            jac[:, 1, k] = np.angle(np.exp(1j * (ai.chi(rows + dr, cols + dc) - c0))) / 0.5
        err = np.stack([tth_rad - t0, np.angle(np.exp(1j * (chi_rad - c0)))], axis=1)
        step = np.linalg.solve(jac, err[:, :, None])[:, :, 0]
        rows, cols = rows + step[:, 0], cols + step[:, 1]
    return rows, cols


def _control_points(poni: Poni, cake: Cake, specs: list[PeakSpec], model: str, background: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, ring 2theta in rad) of the rings' fitted centres, one per sector."""
    rows, cols, tth = [], [], []
    for spec in specs:
        ring = fit_ring(cake, spec, poni.wavelength, model=model, background=background)
        ok = ring.success
        q = np.array([f.centre for f in ring.fits])[ok]
        r, c = _pixels_at(poni, 2 * np.arcsin(q * poni.wavelength * 1e9 / (4 * math.pi)),
                          np.radians(ring.azimuth_deg[ok]))
        rows.append(r)
        cols.append(c)
        tth.append(np.full(r.size, float(two_theta_rad(spec.d0_A, poni.wavelength))))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(tth)


#: Geometry parameters refined on an internal standard (GSAS-II's dist, det-X, det-Y,
#: tilt, phi); rot3 (a rotation about the beam) and the wavelength stay fixed.
REFINED = ("dist", "poni1", "poni2", "rot1", "rot2")


def refine_on_rings(frame: np.ndarray, guess: Poni, specs: list[PeakSpec], *, sectors: int = 72,
                    mask: np.ndarray | None = None, rounds: int = 3, outlier_cut: float = 4.0,
                    model: str = "pseudo-voigt", background: str = "linear") -> RingRefinement:
    """Refine ``guess`` so that the rings of ``specs`` (reflections of an internal
    standard with known d0, e.g. CeO2 dusted on a specimen) lie at their d0.

    Each round cakes the frame with the current geometry, fits every ring in every
    sector, places each fitted centre on the detector (:func:`_pixels_at`), drops
    points beyond ``outlier_cut`` robust standard deviations and refines
    :data:`REFINED` by least squares on the points' 2theta. Unlike pyFAI's automatic
    control-point extraction, only the named rings are used, so the strong rings of
    the specimen next to them cannot be taken for them.
    """
    poni = guess
    for _ in range(rounds):
        cake = integrate_cake(cake_integrator(poni, specs, sectors, mask=mask, polarization_factor=None), frame)
        rows, cols, tth = _control_points(poni, cake, specs, model, background)
        poni, residual = _refine(poni, rows, cols, tth, outlier_cut)
    return RingRefinement(poni, math.degrees(residual), int(rows.size), len(specs))


def _refine(poni: Poni, rows: np.ndarray, cols: np.ndarray, tth: np.ndarray, outlier_cut: float
            ) -> tuple[Poni, float]:
    """Least-squares geometry on control points, after dropping outliers; the rms residual (rad)."""
    ai = poni.integrator()

    def residuals(x: np.ndarray, r: np.ndarray, c: np.ndarray, t: np.ndarray) -> np.ndarray:
        return ai.tth(r, c, param=[*x, poni.rot3]) - t

    if rows.size < 2 * len(REFINED):
        raise GeometryError(f"{rows.size} control points on the rings: too few to refine {len(REFINED)} geometry "
                            "parameters (are the rings in the frame, and the guess near?)")
    x0 = np.array([getattr(poni, k) for k in REFINED])
    delta = residuals(x0, rows, cols, tth)
    spread = 1.4826 * np.median(np.abs(delta - np.median(delta)))
    keep = np.abs(delta - np.median(delta)) <= max(outlier_cut * spread, 1e-9)
    if keep.sum() < 2 * len(REFINED):
        raise GeometryError(f"{int(keep.sum())} control points on the rings after outliers: too few to refine "
                            f"{len(REFINED)} geometry parameters")
    fit = least_squares(residuals, x0, args=(rows[keep], cols[keep], tth[keep]), x_scale=[1e-3, 1e-4, 1e-4, 1e-4, 1e-4],
                        method="lm")
    refined = replace(poni, **dict(zip(REFINED, (float(v) for v in fit.x))))
    return refined, float(np.sqrt(np.mean(fit.fun ** 2)))
