"""Does a converged calibration explain its frame? Checks of the calibrant and the energy.

A refinement converges on any calibrant whose rings nearly coincide with the frame's:
a CeO2 frame told it is Si (Si 111 at d = 3.1356 A beside CeO2 111 at 3.1244 A)
refines to the same residual with the distance 0.4 % off. The residual cannot tell;
the rest of the frame can. With the refined geometry, in this order:

1. *Competing calibrants*: the significant peaks of the frame's 1D pattern are matched
   against the rings of the given calibrant and of :data:`COMPETING_CALIBRANTS`, each
   of these at its best single scale of ``tan(2theta)`` (what a wrong calibrant does to
   the refined distance, the wavelength being fixed). Another calibrant explaining most
   peaks and clearly more than the given one raises
   :class:`~xrd_bluesky.errors.AmbiguousInputError` naming both.
2. *Energy*: the wavelength is refined with the distance, the PONI and the tilts; a
   fitted energy off the given one by more than the thresholds raises
   :class:`~xrd_bluesky.errors.AmbiguousInputError` naming both energies. With one
   frame energy and distance are nearly degenerate: when the fit's uncertainty is
   large nothing is said.
3. *Rings found against rings expected*: the calibrant's rings on enough valid pixels
   are expected; one is found when it has control points and lies on a peak of the
   pattern. Too few found raises :class:`~xrd_bluesky.errors.CalibrationError` naming
   the missing ones.
4. *Unexplained peaks*: the given calibrant must explain most of the peaks beyond its
   first ring and every strong one, else :class:`~xrd_bluesky.errors.CalibrationError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyFAI.calibrant
from scipy.signal import find_peaks

from ...errors import AmbiguousInputError, CalibrationError
from ..geometry import Poni
from ..units import energy_keV
from .settings import CalibrationSettings

#: Calibrants a frame is compared with: the NIST powder standards (Si 640, LaB6 660,
#: CeO2 674, alpha-Al2O3 676), the cubic or simple standards in common use at
#: beamlines (Ni, Au, Pt, Al, NaCl, ZnO, rutile TiO2, Cr2O3) and the two small-angle
#: standards (silver behenate, tetradecanol). Low-symmetry minerals and proteins
#: (quartz, lysozyme...) are left out: their dense ring lists explain almost any peak
#: at some scale.
COMPETING_CALIBRANTS = ("CeO2", "LaB6", "Si", "alpha_Al2O3", "Ni", "Au", "Pt", "Al", "NaCl", "ZnO", "TiO2",
                        "Cr2O3", "AgBh", "C14H30O")


@dataclass(frozen=True)
class Peaks:
    """Peaks of a 1D pattern: positions ``deg`` (2theta, deg), ``prominence`` (counts) and
    ``tolerance`` (deg): a ring within it of a peak lies on the peak (its half width at
    half maximum, at least a set number of bins)."""

    deg: np.ndarray
    prominence: np.ndarray
    tolerance: np.ndarray

    def strongest(self, fraction: float) -> Peaks:
        """The peaks at least ``fraction`` as prominent as the strongest."""
        keep = self.prominence >= fraction * self.prominence.max(initial=0.0)
        return Peaks(self.deg[keep], self.prominence[keep], self.tolerance[keep])

    def on_rings(self, rings_deg: np.ndarray) -> np.ndarray:
        """Whether each ring (deg; shape (..., m)) lies on each peak: shape (..., peaks, m)."""
        return np.abs(np.asarray(rings_deg)[..., None, :] - self.deg[:, None]) <= self.tolerance[:, None]


@dataclass(frozen=True)
class Pattern:
    """The frame's 1D pattern in the refined geometry and its peaks.

    ``bins_deg``/``pixels``: centres (deg, uniform) of all bins and their valid pixels;
    ``peaks``: the local maxima of the mean counts per pixel more prominent than the
    noise threshold.
    """

    bins_deg: np.ndarray
    pixels: np.ndarray
    peaks: Peaks

    @property
    def bin_deg(self) -> float:
        """Width of a bin (deg)."""
        return float(self.bins_deg[1] - self.bins_deg[0])

    def pixels_at(self, tth_deg: np.ndarray) -> np.ndarray:
        """Valid pixels in the bins holding ``tth_deg`` (deg); 0 off the pattern."""
        index = np.round((tth_deg - self.bins_deg[0]) / self.bin_deg).astype(int)
        inside = (index >= 0) & (index < self.bins_deg.size)
        return np.where(inside, self.pixels[np.clip(index, 0, self.bins_deg.size - 1)], 0)


@dataclass(frozen=True)
class CalibrantCheck:
    """What the frame says about the calibrant and the energy.

    ``rings_expected``/``rings_found``: the calibrant's rings on valid pixels / found;
    ``peaks``/``peaks_explained``: significant peaks of the 1D pattern / those on one of
    its rings; ``energy_keV``: the given energy; ``fitted_energy_keV`` and
    ``fitted_energy_sigma_keV``: the energy refined from the control points and its
    standard uncertainty (keV; NaN when the rings cannot tell, see :func:`fit_wavelength`).
    """

    rings_expected: int
    rings_found: int
    peaks: int
    peaks_explained: int
    energy_keV: float
    fitted_energy_keV: float
    fitted_energy_sigma_keV: float


def check_calibration(image: np.ndarray, refined: Poni, calibrant_name: str, control_points: np.ndarray,
                      bad: np.ndarray, label: str, settings: CalibrationSettings,
                      guess_distance_m: float) -> CalibrantCheck:
    """Run the checks of the module docstring on a converged calibration.

    Parameters
    ----------
    image : ndarray
        The calibrant frame (counts).
    refined : Poni
        The refined geometry (m, rad).
    calibrant_name : str
        pyFAI name of the calibrant the calibration was told.
    control_points : ndarray
        (row, column, ring index) of the control points the geometry was refined on.
    bad : ndarray
        Masked pixels (True = bad).
    label : str
        Name of the frame in messages.
    settings : CalibrationSettings
        Thresholds.
    guess_distance_m : float
        Distance of the guess (m): another calibrant is considered only at scales that
        put the detector within ``settings.max_distance_change`` of it.

    Raises
    ------
    AmbiguousInputError
        Another calibrant explains clearly more peaks, or the rings want another energy.
    CalibrationError
        Too few of the expected rings are found, or peaks are left unexplained.
    """
    pattern = integrate_pattern(image, refined, bad, settings)
    rings = ring_tth_deg(calibrant_name, refined.wavelength)
    peaks = pattern.peaks.strongest(settings.peak_min_fraction)
    given = explained_peaks(peaks, rings, np.array([1.0]))[0]
    scales = _scale_range(refined.dist, guess_distance_m, settings.max_distance_change)
    _check_competitors(peaks, given, calibrant_name, refined, scales, label, settings)
    # a wrong energy misplaces the outer rings: say so before they are called unexplained or missing
    fitted, sigma = fit_wavelength(refined, control_points, rings)
    _check_energy(refined.wavelength, fitted, sigma, label, settings)
    expected, found = _check_rings_found(pattern, rings, control_points, label, calibrant_name, refined.wavelength,
                                         settings)
    _check_unexplained(peaks, given, rings, calibrant_name, label, settings)
    return CalibrantCheck(expected, found, int(peaks.deg.size), int(given.sum()), energy_keV(refined.wavelength),
                          energy_keV(fitted), energy_keV(fitted) * sigma / fitted)


@cache
def _d_spacings_m(calibrant_name: str) -> np.ndarray:
    """d-spacings (m, descending) of pyFAI's calibrant ``calibrant_name``."""
    return np.asarray(pyFAI.calibrant.get_calibrant(calibrant_name).dspacing, dtype=float) * 1e-10


def ring_tth_deg(calibrant_name: str, wavelength_m: float) -> np.ndarray:
    """2theta (deg, ascending, distinct) of the rings of ``calibrant_name`` reachable at
    ``wavelength_m`` (m), indexed as pyFAI's ring extraction numbers them."""
    ratio = wavelength_m / (2.0 * _d_spacings_m(calibrant_name))
    return np.unique(np.degrees(2.0 * np.arcsin(ratio[ratio <= 1.0])))


def integrate_pattern(image: np.ndarray, poni: Poni, bad: np.ndarray, settings: CalibrationSettings) -> Pattern:
    """The 1D pattern of the valid pixels of every ``settings.check_stride``-th row and
    column: their mean counts in ``settings.check_bins`` bins of 2theta (no pixel
    splitting), and its local maxima more prominent than ``settings.peak_min_sigma``
    robust standard deviations of the intensity (from its bin-to-bin differences, which
    the sparse peaks barely affect).

    A stride of 2 keeps hundreds of pixels per bin and every ring, and computes the
    2theta of a quarter of the pixels: the check then costs a few per cent of the
    calibration. ``pixels`` counts the valid pixels of the whole frame (estimated). A
    peak's tolerance is its half width at half maximum, at least
    ``settings.peak_tolerance_bins`` bins.
    """
    step = settings.check_stride
    sub = image[::step, ::step]
    rows, cols = np.nonzero(~bad[::step, ::step] & np.isfinite(sub))
    tth = np.degrees(poni.integrator().tth(rows * float(step), cols * float(step)))
    edges = np.linspace(tth.min(), tth.max(), settings.check_bins + 1)
    index = np.clip(np.searchsorted(edges, tth, side="right") - 1, 0, settings.check_bins - 1)
    pixels = np.bincount(index, minlength=settings.check_bins)
    sums = np.bincount(index, weights=sub[rows, cols], minlength=settings.check_bins)
    used = pixels > 0
    centres, intensity = 0.5 * (edges[1:] + edges[:-1]), sums[used] / pixels[used]
    steps = np.diff(intensity)
    noise = 1.4826 * float(np.median(np.abs(steps - np.median(steps)))) / math.sqrt(2.0) if steps.size else 0.0
    index, props = find_peaks(intensity, prominence=max(settings.peak_min_sigma * noise, np.finfo(float).tiny),
                              width=0.0, rel_height=0.5)
    bin_deg = float(edges[1] - edges[0])
    tolerance = np.maximum(0.5 * props["widths"] * bin_deg, settings.peak_tolerance_bins * bin_deg)
    peaks = Peaks(_vertex_deg(centres[used], intensity, index), props["prominences"], tolerance)
    return Pattern(centres, pixels * step ** 2, peaks)


def _vertex_deg(tth: np.ndarray, intensity: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Sub-bin peak positions (deg): the vertex of the parabola through each maximum and its neighbours."""
    if tth.size < 3:
        return tth[index]
    inner = np.clip(index, 1, tth.size - 2)
    left, centre, right = intensity[inner - 1], intensity[inner], intensity[inner + 1]
    curvature = left - 2.0 * centre + right
    offset = np.divide(0.5 * (left - right), curvature, out=np.zeros_like(centre), where=curvature < 0)
    return np.interp(inner + np.clip(offset, -0.5, 0.5), np.arange(tth.size), tth)


def _scale_range(refined_distance_m: float, guess_distance_m: float, max_change: float) -> tuple[float, float]:
    """Range of ``tan(2theta)`` scales (refined distance / true distance) of another
    calibrant: those putting the true distance within ``max_change`` of the guess's."""
    return (refined_distance_m / (guess_distance_m * (1.0 + max_change)),
            refined_distance_m / (guess_distance_m * (1.0 - max_change)))


def explained_peaks(peaks: Peaks, rings_deg: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Which peaks lie on a ring (deg) whose ``tan(2theta)`` is multiplied by each of
    ``scales``: a boolean array (scales, peaks)."""
    scaled = np.degrees(np.arctan(np.multiply.outer(scales, np.tan(np.radians(rings_deg)))))
    return peaks.on_rings(scaled).any(axis=-1)


def best_scale(peaks: Peaks, rings_deg: np.ndarray, scales: tuple[float, float]) -> tuple[int, float]:
    """The most peaks the rings (deg) explain at one ``tan(2theta)`` scale within
    ``scales``, and that scale (1 when none is explained). The candidates are the scales
    that put a ring exactly on a peak: any best scale moves to one of them without
    losing a peak."""
    if peaks.deg.size == 0:
        return 0, 1.0
    tan_rings = np.tan(np.radians(rings_deg[rings_deg < 89.0]))
    tan_peaks = np.tan(np.radians(peaks.deg))
    # the rings some scale brings within reach of the peaks
    reach = (tan_rings * scales[1] >= tan_peaks.min() / 1.01) & (tan_rings * scales[0] <= tan_peaks.max() * 1.01)
    rings = tan_rings[reach]
    ratio = (tan_peaks[:, None] / rings[None, :]).ravel()
    candidates = ratio[(ratio >= scales[0]) & (ratio <= scales[1])]
    if candidates.size == 0:
        return 0, 1.0
    counts = explained_peaks(peaks, np.degrees(np.arctan(rings)), candidates).sum(axis=1)
    return int(counts.max()), float(candidates[np.argmax(counts)])


def _check_competitors(peaks: Peaks, given: np.ndarray, calibrant_name: str, refined: Poni,
                       scales: tuple[float, float], label: str, settings: CalibrationSettings) -> None:
    """Raise when the best of the other :data:`COMPETING_CALIBRANTS`, at its best scale,
    explains at least ``settings.competitor_min_fraction`` of the peaks and either
    ``settings.competitor_margin`` more than the given one (``given``: which it
    explains) or more and among them a strong peak (``settings.strong_peak_fraction``
    of the strongest) the given one leaves unexplained. A geometry that is just wrong
    leaves the peaks split or smeared: no calibrant explains most of them."""
    others = {name: best_scale(peaks, ring_tth_deg(name, refined.wavelength), scales)
              for name in COMPETING_CALIBRANTS if name != calibrant_name}
    name = max(others, key=lambda n: others[n][0])
    count, scale = others[name]
    if count <= given.sum() or count < settings.competitor_min_fraction * peaks.deg.size:
        return
    other = explained_peaks(peaks, ring_tth_deg(name, refined.wavelength), np.array([scale]))[0]
    strong = peaks.prominence >= settings.strong_peak_fraction * peaks.prominence.max()
    if count >= given.sum() + settings.competitor_margin or np.any(other & ~given & strong):
        missed = ", ".join(f"{t:.3f}" for t in peaks.deg[~given])
        raise AmbiguousInputError(
            f"{label}: the frame looks like {name}, not {calibrant_name}: of its {peaks.deg.size} significant "
            f"peaks {name} explains {count} (at a distance of {refined.dist / scale * 1e3:.2f} mm), "
            f"{calibrant_name} {int(given.sum())} (at {refined.dist * 1e3:.2f} mm); "
            f"2theta of the peaks {calibrant_name} leaves unexplained: {missed} deg")


def _check_unexplained(peaks: Peaks, given: np.ndarray, rings_deg: np.ndarray, calibrant_name: str, label: str,
                       settings: CalibrationSettings) -> None:
    """Raise when, outside the calibrant's first ring (inside it: the beamstop's edge,
    parasitic scattering), the given calibrant explains fewer than
    ``settings.min_found_fraction`` of the peaks or leaves a strong one
    (``settings.strong_peak_fraction`` of the strongest) unexplained."""
    first = rings_deg[0] if rings_deg.size else 0.0
    outside = peaks.deg >= first - peaks.tolerance
    strong = peaks.prominence >= settings.strong_peak_fraction * peaks.prominence.max(initial=0.0)
    unexplained = outside & ~given
    if given[outside].sum() >= settings.min_found_fraction * outside.sum() and not np.any(unexplained & strong):
        return
    listed = ", ".join(f"{t:.3f}" + (" (strong)" if s else "")
                       for t, s in zip(peaks.deg[unexplained], strong[unexplained]))
    raise CalibrationError(
        f"{label}: the refined geometry does not explain the frame: {calibrant_name} explains "
        f"{int(given[outside].sum())} of its {int(outside.sum())} significant peaks beyond its first ring (need "
        f"{settings.min_found_fraction:.0%} and every strong one); 2theta of the others: {listed} deg: a wrong "
        "calibrant, an impure one, or a guess too far off?")


def _check_rings_found(pattern: Pattern, rings_deg: np.ndarray, control_points: np.ndarray, label: str,
                       calibrant_name: str, wavelength_m: float, settings: CalibrationSettings) -> tuple[int, int]:
    """(expected, found) rings; raise when fewer than ``settings.min_found_fraction`` of
    the expected or than ``settings.min_rings`` are found.

    Found: a ring with control points and on a peak of the pattern. Expected: the
    rings whose 2theta bin holds at least ``settings.min_ring_pixels`` valid pixels,
    innermost first, as many as the last round of ``settings.ring_schedule`` extracts,
    up to the outermost found: rings fading out at high angles is what powders do (form factors, thermal motion; the
    high orders of silver behenate), rings missing between found ones is what a wrong
    calibrant or a wrong ring assignment does.
    """
    on_pixels = np.flatnonzero(pattern.pixels_at(rings_deg) >= settings.min_ring_pixels)[:settings.ring_schedule[-1]]
    on_peak = pattern.peaks.on_rings(rings_deg[on_pixels]).any(axis=0)
    found = np.isin(on_pixels, control_points[:, 2].astype(int)) & on_peak
    expected = on_pixels[:np.flatnonzero(found)[-1] + 1] if found.any() else on_pixels
    found = found[:expected.size]
    if found.sum() < max(settings.min_rings, settings.min_found_fraction * expected.size):
        missing = rings_deg[expected[~found]]
        d_A = wavelength_m * 1e10 / (2.0 * np.sin(np.radians(missing) / 2.0))
        listed = ", ".join(f"{t:.3f} deg ({d:.4f} A)" for t, d in zip(missing, d_A))
        raise CalibrationError(
            f"{label}: only {int(found.sum())} of the {expected.size} {calibrant_name} rings expected on the valid "
            f"pixels{' inward of the outermost found' if found.any() else ''} were found (need "
            f"{settings.min_found_fraction:.0%} and at least {settings.min_rings}); 2theta (d) of those missing: "
            f"{listed}: a wrong calibrant, or a guess too far off?")
    return int(expected.size), int(found.sum())


#: Geometry parameters refined with the wavelength, and their finite-difference steps (m, rad).
_FREE_STEPS = {"dist": 1e-5, "poni1": 1e-6, "poni2": 1e-6, "rot1": 1e-6, "rot2": 1e-6}
#: Fewest rings for a fit of the wavelength whose uncertainty can be estimated.
MIN_WAVELENGTH_RINGS = 4
#: Largest relative wavelength change a fit may want: beyond it the rings do not
#: constrain the wavelength (energy and distance degenerate at small angles) and the
#: linearised fit runs away.
MAX_WAVELENGTH_CHANGE = 0.1


def fit_wavelength(refined: Poni, control_points: np.ndarray, rings_deg: np.ndarray) -> tuple[float, float]:
    """Wavelength (m) that, refined together with the distance, the PONI and the tilts,
    best puts the control points on their rings, and its standard uncertainty (m);
    NaN for both with fewer than :data:`MIN_WAVELENGTH_RINGS` rings, a singular fit or
    one wanting a change beyond :data:`MAX_WAVELENGTH_CHANGE`.

    One Gauss-Newton step from the refined geometry (the optimum at the given
    wavelength), linearised on the control points' 2theta. The uncertainty is the
    jackknife over rings (each ring left out in turn): a ring's points share its
    systematic error, so they are not independent and their scatter would understate
    it. Where energy and distance are degenerate (small angles) the leave-one-out fits
    scatter widely and the uncertainty is large.
    """
    ring = control_points[:, 2].astype(int)
    used = np.unique(ring)
    if used.size < MIN_WAVELENGTH_RINGS:
        return float("nan"), float("nan")
    jacobian, residual = _linearised(refined, control_points, rings_deg[ring])
    norms = np.linalg.norm(jacobian, axis=0)  # columns scaled to 1 for conditioning; the wavelength's is last
    jacobian = jacobian / norms
    normal, rhs = jacobian.T @ jacobian, jacobian.T @ residual
    blocks = [(jacobian[ring == r].T @ jacobian[ring == r], jacobian[ring == r].T @ residual[ring == r]) for r in used]
    try:
        relative = -np.linalg.solve(normal, rhs)[-1] / norms[-1]
        leave_out = np.array([-np.linalg.solve(normal - a, rhs - b)[-1] for a, b in blocks]) / norms[-1]
    except np.linalg.LinAlgError:
        return float("nan"), float("nan")
    if not abs(relative) <= MAX_WAVELENGTH_CHANGE:
        return float("nan"), float("nan")
    sigma = math.sqrt((used.size - 1) / used.size * np.sum((leave_out - leave_out.mean()) ** 2))
    return refined.wavelength * (1.0 + relative), refined.wavelength * sigma


def _linearised(refined: Poni, control_points: np.ndarray, ring_tth_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals (rad) of the control points' 2theta in the refined geometry against their
    rings' (deg), and their derivatives by the geometry parameters of
    :data:`_FREE_STEPS` (finite differences, per step) and by the relative wavelength."""
    from pyFAI.geometry import Geometry

    def tth(**change: float) -> np.ndarray:
        params = {k: getattr(refined, k) + change.get(k, 0.0)
                  for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")}
        geo = Geometry(detector=refined.detector_model(), wavelength=refined.wavelength, **params)
        return geo.tth(control_points[:, 0], control_points[:, 1])

    base = tth()
    columns = [tth(**{k: h}) - base for k, h in _FREE_STEPS.items()]
    columns.append(-2.0 * np.tan(np.radians(ring_tth_deg) / 2.0))  # d(ring 2theta)/d(ln lambda) = 2 tan(theta)
    return np.column_stack(columns), base - np.radians(ring_tth_deg)


def _check_energy(given_m: float, fitted_m: float, sigma_m: float, label: str, settings: CalibrationSettings) -> None:
    """Raise when the fitted wavelength (m) is off the given one by more than
    ``settings.energy_max_sigma`` of its uncertainty and ``settings.energy_min_change``
    (relative); say nothing when the fit failed."""
    change = fitted_m / given_m - 1.0
    if not (abs(change) > settings.energy_min_change and abs(fitted_m - given_m) > settings.energy_max_sigma * sigma_m):
        return
    given, fitted = energy_keV(given_m), energy_keV(fitted_m)
    raise AmbiguousInputError(
        f"{label}: the rings' positions want an energy of {fitted:.3f} +- {fitted * sigma_m / fitted_m:.3f} keV, "
        f"not the given {given:.3f} keV ({-change:+.2%}); with one frame energy and distance are nearly "
        "degenerate: check the energy, or calibrate with the energy known")
