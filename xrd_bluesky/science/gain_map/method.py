"""Detector gain map from an amorphous scatterer measured at several detector positions.

Model: the dark-subtracted mean frame at position p is
``F_p(i) = g(i) * S_p(2theta_p(i)) * Omega_p(i) * P_p(i)``: the pixel's gain times a
smooth radial profile of the sample's scattering times the pixel's solid angle and
polarization factor, both known from the geometry. Because the detector moves and the
sample does not, every pixel sees a different part of the profile at every position,
and the profile can be learned from all pixels at once.

Method (ours):

1. ``C_p = F_p / (Omega_p P_p)``, NaN where masked (gaps, beamstop, invalid).
2. Radial profile per position: sigma-clipped mean of ``C_p / g`` in 2theta bins
   (``g`` = current gain estimate, 1 at first), each bin placed at the mean 2theta of
   its pixels (the correct bin centre), bins with too few pixels dropped; linear
   interpolation between bins, linear extrapolation only beyond the populated range.
3. Per-position gain ``g_p = C_p / profile_p(2theta_p)``; combined gain: the mean of
   the ``g_p`` weighted by each position's photon count, NaN-aware (a pixel shadowed
   at one position takes its gain from the others), outlying positions rejected.
4. Steps 2-3 repeat (5 times by default) so that the profile no longer carries the
   module composition of its bins; the gain is normalised to median 1.
5. Bad pixels on both sides from a robust local z-score (dead, damaged, low), plus
   hot pixels from the darks; per-pixel uncertainty from photon statistics.

Each position's usable pixels, their corrections and 2theta bins are computed once
(:class:`PositionPixels`); a round is then a few sequential passes over them
(compiled: the profile's sums, the estimates, the weighted mean).

Inputs that contradict each other are refused (:class:`GainMapError`), never turned
into a gain map: two positions with the same geometry (their frames differ: a PONI
belongs to other frames; they agree: the detector did not move); after the first
round, a position whose frame's rings are not centred on its PONI's beam centre or
whose radial profile disagrees with the others' (the sample's profile is the same at
every position); a result with an implausible share of bad pixels or gain spread.

The published method this improves on is :func:`published_gain_map`.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numba
import numpy as np
import pyFAI.units
from scipy import ndimage

from ...errors import ShapeMismatchError, XRDBlueskyError
from ..detector_pixels import module_slices, pixel_geometry
from ..geometry import Poni


class GainMapError(XRDBlueskyError, ValueError):
    """The gain-map input is unusable (overlapping beamstops, no coverage, positions
    that contradict each other...)."""


#: Robust reduced chi2 between the normalised mean frames of two positions with the same
#: geometry above which they differ (a repeated position gives ~1).
REPEAT_CHI2_LIMIT = 3.0
#: Largest distance (px) between the beam centre of a position's PONI and the centre of the
#: rings of its frame (simulated good inputs: < 0.7 px; PONIs 2-150 px off: found within 10 %).
RING_CENTRE_TOLERANCE_PX = 5.0
#: Largest scatter of a position's gain estimate around its ring mean, in units of the
#: pixel-to-pixel scatter (simulated good inputs: 1.0, 1.5 with 3 % module steps; swapped
#: PONIs 70-290 px off: > 6).
RING_SCATTER_LIMIT = 3.0
#: Largest median relative deviation of a position's radial profile from the positions'
#: consensus (simulated good inputs: < 0.5 %; swapped PONIs, also of two distances: > 14 %).
PROFILE_TOLERANCE = 0.02
#: Largest fraction of the seen pixels that a plausible gain map flags bad.
MAX_BAD_FRACTION = 0.2
#: Largest robust relative spread (IQR / 1.349) of a plausible gain map's good pixels.
MAX_GAIN_SPREAD = 0.3


@dataclass(frozen=True)
class GainMapSettings:
    """Parameters of the gain-map computation.

    ``bin_width_px``: 2theta bin width in units of a pixel's angular size;
    ``min_bin_pixels``: fewest valid pixels for a bin to count; ``clip_sigma``:
    sigma-clipping of bin means; ``iterations``: profile/gain refinements;
    ``bad_sigma``: robust z beyond which a pixel is flagged (both sides), taken
    against its module's median (``local_window`` x ``local_window`` px neighbourhood
    for detectors without modules); ``dead_below``: gains below this are dead; ``hot_dark_sigma``: dark rate
    z beyond which a pixel is hot; ``smooth_window``: median-filter window (px) at
    the detector's point-spread width, 0 = no smoothing (a real pixel-to-pixel gain
    variation would be smoothed away, so the default is off).
    """

    bin_width_px: float = 1.0
    min_bin_pixels: int = 50
    clip_sigma: float = 3.0
    iterations: int = 5
    bad_sigma: float = 6.0
    local_window: int = 9
    dead_below: float = 0.2
    hot_dark_sigma: float = 10.0
    smooth_window: int = 0
    polarization_factor: float = 0.99

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PositionData:
    """The mean dark-subtracted frame of one position (counts per frame), the number
    of frames averaged, its geometry and its mask (True = bad)."""

    label: str
    mean_frame: np.ndarray
    n_frames: int
    poni: Poni
    mask: np.ndarray


@dataclass(frozen=True)
class GainMap:
    """Result: multiplicative gain (``corrected = raw / gain``, median 1), bad-pixel
    mask (True = bad), 1-sigma uncertainty of the gain, and statistics."""

    gain: np.ndarray
    bad: np.ndarray
    sigma: np.ndarray
    statistics: dict = field(default_factory=dict)

    def export(self, path, *, form: str = "gain", metadata: dict | None = None) -> None:
        """Write a float32 image (``.tif`` or ``.edf`` by suffix) of the gain or its
        inverse (``form="inverse"``); bad pixels are written as NaN."""
        import fabio

        if form not in ("gain", "inverse"):
            raise ValueError(f"form must be 'gain' or 'inverse', not {form!r}")
        data = self.gain if form == "gain" else 1.0 / self.gain
        data = np.where(self.bad, np.nan, data).astype(np.float32)
        header = {"form": form, **{k: str(v) for k, v in (metadata or {}).items()}}
        suffix = str(path).rsplit(".", 1)[-1].lower()
        if suffix in ("tif", "tiff"):
            fabio.tifimage.TifImage(data=data, header=header).write(str(path))
        elif suffix == "edf":
            fabio.edfimage.EdfImage(data=data, header=header).write(str(path))
        else:
            raise ValueError(f"export to .tif or .edf, not {path}")


def check_shadows_disjoint(ponis: list[Poni], beamstop, labels: list[str] | None = None,
                           margin_mm: float = 0.5) -> None:
    """Raise :class:`GainMapError` naming the positions whose beamstop shadows overlap.

    Every pixel must be seen unshadowed at some position, or the gain map has holes.
    """
    labels = labels or [f"position {i}" for i in range(len(ponis))]
    shadows = [beamstop.shadow(pixel_geometry(p), margin_mm=margin_mm) for p in ponis]
    clashes = []
    for i in range(len(shadows)):
        for j in range(i + 1, len(shadows)):
            n = int((shadows[i] & shadows[j]).sum())
            if n:
                same = ", the same geometry: does it follow the detector stage?" if ponis[i] == ponis[j] else ""
                clashes.append(f"{labels[i]} and {labels[j]} ({n} pixels{same})")
    if clashes:
        raise GainMapError("beamstop shadows overlap between " + "; ".join(clashes)
                           + ": move those positions further apart")


@dataclass(frozen=True, eq=False)
class PositionPixels:
    """What every round needs of one position, computed once: its usable pixels (not
    masked, finite; flat int32 indices in detector order), each with ``C_p`` (counts per
    frame over ``norm``), 2theta (rad), ``norm`` (relative solid angle x polarization
    factor) and 2theta bin number (int32), and the position's full 2theta map (rad)."""

    position: PositionData
    pixels: np.ndarray
    corrected: np.ndarray
    two_theta_rad: np.ndarray
    norm: np.ndarray
    bins: np.ndarray
    two_theta_map_rad: np.ndarray

    @classmethod
    def prepare(cls, position: PositionData, settings: GainMapSettings) -> PositionPixels:
        """Select and correct (``settings.polarization_factor``) ``position``'s pixels and
        number their 2theta bins, ``settings.bin_width_px`` pixels' angular size wide.

        Raises
        ------
        GainMapError
            The position has no usable pixel.
        """
        two_theta_map, norm = pixel_corrections(position.poni, settings.polarization_factor)
        norm = norm.ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            corrected = position.mean_frame.ravel() / norm
        pixels = np.flatnonzero(~position.mask.ravel() & np.isfinite(corrected))
        if pixels.size == 0:
            raise GainMapError(f"{position.label}: no usable pixels")
        tth = two_theta_map.ravel()[pixels]
        bin_width_rad = settings.bin_width_px * position.poni.detector_model().pixel1 / position.poni.dist
        bins = ((tth - tth.min()) / bin_width_rad).astype(np.int32)
        return cls(position, pixels.astype(np.int32), corrected[pixels], tth, norm[pixels], bins, two_theta_map)

    def image(self, values: np.ndarray) -> np.ndarray:
        """A detector image of ``values`` (one per usable pixel), NaN elsewhere."""
        out = np.full(self.two_theta_map_rad.size, np.nan)
        out[self.pixels] = values
        return out.reshape(self.two_theta_map_rad.shape)


def pixel_corrections(poni: Poni, polarization_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of ``poni``'s detector: 2theta (rad) and the relative solid angle (1 at
    the PONI; its scale cancels in ``C_p / profile_p`` and in the weights) times the
    polarization factor, as pyFAI defines them.

    pyFAI computes the pixels' positions, its costliest step, once for 2theta and again
    for the azimuth of its polarization factor: here they are computed once, and
    ``cos 2chi = (x^2 - y^2) / (x^2 + y^2)`` (pyFAI's ``chi = arctan2(y, x)``) and
    ``cos^2 2theta = z^2 / (x^2 + y^2 + z^2)`` enter pyFAI's formula directly.
    """
    ai = poni.integrator()
    z, y, x = np.moveaxis(ai.position_array(), -1, 0)  # metres: z along the beam, y up, x across
    two_theta = pyFAI.units.to_unit("2th_rad").equation(x, y, z, ai.wavelength)
    radius2 = x * x + y * y
    cos2_tth = z * z / (radius2 + z * z)
    cos_2chi = np.divide(x * x - y * y, radius2, out=np.ones_like(radius2), where=radius2 > 0)
    polarization = 0.5 * (1.0 + cos2_tth - polarization_factor * cos_2chi * (1.0 - cos2_tth))
    return two_theta, ai.solidAngleArray() * polarization


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _clipped_bin_means(corrected: np.ndarray, gain: np.ndarray, pixels: np.ndarray, tth: np.ndarray,
                       bins: np.ndarray, clip_sigma: float, clip_rounds: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin (``bins``: each pixel's bin number): the count, mean and mean ``tth`` of the
    finite values ``corrected / gain[pixels]`` (``gain``: a flat detector image, dead
    pixels of gain 0 give infinities) kept by ``clip_rounds`` rounds of sigma-clipping,
    each keeping the values within ``clip_sigma`` standard deviations of the previous
    round's mean (the first round: all finite values). Empty bins: count 0, NaN.

    One sequential pass over the pixels per round, into per-bin sums small enough to
    stay in cache (the sums of a bin are taken in pixel order, as ``np.bincount`` does).
    """
    values = np.empty(corrected.size)
    for i in range(corrected.size):
        v = corrected[i] / gain[pixels[i]]
        values[i] = v if np.isfinite(v) else np.nan  # never kept: NaN fails every comparison
    n_bins = bins.max() + 1
    mean, limit = np.zeros(n_bins), np.full(n_bins, np.inf)
    for _round in range(clip_rounds + 1):
        n, s1, s2, st = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
        for i in range(values.size):
            v, b = values[i], bins[i]
            if abs(v - mean[b]) <= limit[b]:
                n[b] += 1.0
                s1[b] += v
                s2[b] += v * v
                st[b] += tth[i]
        for b in range(n_bins):
            if n[b] > 0:
                mean[b] = s1[b] / n[b]
                limit[b] = clip_sigma * np.sqrt(max(s2[b] / n[b] - mean[b] ** 2, 0.0)) + 1e-12
            else:
                mean[b] = np.nan  # an emptied bin stays empty
    return n, mean, st / n


def radial_profile(pixels: PositionPixels, gain: np.ndarray, min_pixels: int, clip_sigma: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigma-clipped mean (3 rounds of clipping at ``clip_sigma``) of ``C_p / gain`` over
    the usable pixels of ``pixels`` in their 2theta bins (``gain``: flat detector image;
    NaN or infinite values left out).

    Returns (bin centres = mean 2theta of the bins' kept pixels in rad, profile, bin
    numbers), bins of at least ``min_pixels`` kept pixels only.

    Raises
    ------
    GainMapError
        Fewer than 2 such bins.
    """
    n, mean, centre = _clipped_bin_means(pixels.corrected, gain, pixels.pixels, pixels.two_theta_rad, pixels.bins,
                                         clip_sigma, 3)
    good = np.flatnonzero(n >= min_pixels)
    if good.size < 2:
        raise GainMapError(f"{pixels.position.label}: fewer than 2 radial bins with {min_pixels} usable pixels")
    return centre[good], mean[good], good


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _profile_estimate(tth: np.ndarray, bins: np.ndarray, corrected: np.ndarray, norm: np.ndarray, n_frames: int,
                      centres: np.ndarray, profile: np.ndarray, first_guess: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the gain estimate ``corrected / expected`` and its weight (photons behind
    it: ``expected x norm x n_frames``), ``expected`` the ``profile`` at ``tth``, linear
    between the ``centres`` (increasing) and extended linearly beyond the end ones.

    ``first_guess[b]``: for a pixel of bin ``b`` (``bins``), where the search for the
    last centre at or below its ``tth`` starts (a centre or two off at most).
    """
    slope = (profile[1:] - profile[:-1]) / (centres[1:] - centres[:-1])
    last = centres.size - 1
    estimate, weight = np.empty(tth.size), np.empty(tth.size)
    for i in range(tth.size):
        x, j = tth[i], first_guess[bins[i]]
        while j < last and centres[j + 1] <= x:
            j += 1
        while j >= 0 and centres[j] > x:
            j -= 1
        segment = min(max(j, 0), last - 1)
        anchor = last if x > centres[last] else segment  # beyond the last centre: along the last segment from it
        expected = profile[anchor] + (x - centres[anchor]) * slope[segment]
        estimate[i] = corrected[i] / expected
        weight[i] = expected * norm[i] * n_frames
    return estimate, weight


def compute_gain_map(positions: list[PositionData], *, dark_rate: np.ndarray | None = None,
                     settings: GainMapSettings = GainMapSettings()) -> GainMap:
    """Compute the gain map from per-position mean frames (see the module docstring).

    Parameters
    ----------
    positions : list of PositionData
        At least two positions with different beamstop shadows.
    dark_rate : ndarray, optional
        Mean dark frame (counts per frame), for hot-pixel detection.
    settings : GainMapSettings
        Parameters.

    Raises
    ------
    ShapeMismatchError
        A position's frame or mask differs in shape from the first position's.
    GainMapError
        Fewer than 2 (distinct) positions, a position without usable pixels, inputs that
        contradict each other (:func:`check_distinct_geometries`, :func:`check_frames_match_ponis`,
        :func:`check_profiles_agree`) or an implausible result (:func:`check_gain_plausible`).
    """
    _check_shapes(positions)
    pixel_size_m = positions[0].poni.detector_model().pixel1
    prepared = [PositionPixels.prepare(p, settings) for p in positions]
    tth_maps = [p.two_theta_map_rad for p in prepared]
    check_distinct_geometries(positions, tth_maps, pixel_size_m)
    gain = np.ones(positions[0].mean_frame.size)
    for round_ in range(settings.iterations):
        estimates, weights, profiles = zip(*(_position_estimate(p, gain, settings) for p in prepared))
        if round_ == 0:
            check_frames_match_ponis(positions, [p.image(e) for p, e in zip(prepared, estimates)], tth_maps, profiles)
            check_profiles_agree(positions, profiles)
        last = round_ == settings.iterations - 1
        gain, photons = _combine(prepared, estimates, weights, settings.clip_sigma if last else None)
        good = np.isfinite(gain) & (gain > settings.dead_below)
        gain /= np.median(gain[good])
    shape = positions[0].mean_frame.shape
    return _finish(gain.reshape(shape), photons.reshape(shape), dark_rate, positions, settings)


def _check_shapes(positions: list[PositionData]) -> None:
    """At least 2 positions, all with the first one's frame shape."""
    if len(positions) < 2:
        raise GainMapError(f"a gain map needs at least 2 detector positions, got {len(positions)}")
    shape = positions[0].mean_frame.shape
    for p in positions:
        if p.mean_frame.shape != shape or p.mask.shape != shape:
            raise ShapeMismatchError(f"{p.label}: frame shape {p.mean_frame.shape} differs from {shape}")


def _position_estimate(pixels: PositionPixels, gain: np.ndarray, settings: GainMapSettings
                       ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """One round at one position (steps 2-3), given the current ``gain`` (flat detector
    image): per usable pixel the gain estimate ``C_p / profile_p`` and its weight (photons
    behind it: expected counts at gain 1 x frames), and the radial profile (bin centres in
    rad, ``C_p / g``)."""
    centres, profile, bins = radial_profile(pixels, gain, settings.min_bin_pixels, settings.clip_sigma)
    # a pixel of bin b lies above the centres of the bins before b: start from the last of them
    first_guess = np.searchsorted(bins, np.arange(pixels.bins.max() + 1)) - 1
    estimate, weight = _profile_estimate(pixels.two_theta_rad, pixels.bins, pixels.corrected, pixels.norm,
                                         pixels.position.n_frames, centres, profile, first_guess)
    return estimate, weight, (centres, profile)


def check_distinct_geometries(positions: list[PositionData], two_theta_rad: list[np.ndarray], pixel_size_m: float,
                              stride: int = 8) -> None:
    """Raise :class:`GainMapError` naming two positions with the same geometry whose frames
    differ (one PONI belongs to other frames), or if the positions do not move the detector.

    Two geometries are the same when their 2theta maps agree within a pixel's angular size
    (sampled every ``stride`` px): a beam centre within ~1 px and a distance within ~0.1 %.
    The same geometry with frames equal within noise (:data:`REPEAT_CHI2_LIMIT`) is a
    repeated position: harmless while at least 2 distinct positions remain.
    """
    repeats = set()
    for i, j in itertools.combinations(range(len(positions)), 2):
        a, b = positions[i], positions[j]
        mismatch_rad = np.abs(two_theta_rad[i][::stride, ::stride] - two_theta_rad[j][::stride, ::stride]).max()
        if mismatch_rad > pixel_size_m / a.poni.dist:
            continue
        chi2 = _frames_chi2(a, b)
        if chi2 > REPEAT_CHI2_LIMIT:
            raise GainMapError(f"{a.label} ({_describe(a.poni)}) and {b.label} ({_describe(b.poni)}) have the same "
                               f"geometry but their frames differ (robust reduced chi2 {chi2:.3g}, a repeated position "
                               f"gives ~1, plausible <= {REPEAT_CHI2_LIMIT:g}): one of the two PONIs belongs to other "
                               "frames")
        repeats.add(j)
    if len(positions) - len(repeats) < 2:
        raise GainMapError("the detector does not move between " + ", ".join(p.label for p in positions) + " (same "
                           "geometry, frames equal within noise): a gain map needs at least 2 distinct positions")


def _describe(poni: Poni) -> str:
    row, col = poni.beam_centre_px()
    return f"beam centre ({row:.1f}, {col:.1f}) px, distance {poni.dist * 1e3:.2f} mm"


def _frames_chi2(a: PositionData, b: PositionData) -> float:
    """Robust reduced chi2 of the difference of two mean frames (counts per frame), the
    second scaled to the first's median, against their Poisson noise: median of z^2 over
    the pixels both see, divided by 0.455 (the median of chi2 with 1 degree of freedom)."""
    ok = ~a.mask & ~b.mask & (a.mean_frame > 0) & (b.mean_frame > 0)
    if not ok.any():
        return np.inf
    fa, fb = a.mean_frame[ok], b.mean_frame[ok]
    scale = np.median(fa) / np.median(fb)
    z2 = (fa - scale * fb) ** 2 / (fa / a.n_frames + scale**2 * fb / b.n_frames)
    return float(np.median(z2) / 0.455)


def check_frames_match_ponis(positions: list[PositionData], estimates: list[np.ndarray],
                             two_theta_rad: list[np.ndarray], profiles: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Raise :class:`GainMapError` naming the positions whose frame does not match its
    PONI (:func:`ring_statistics` of the first-round gain estimates ``C_p / profile_p``):
    the PONI's beam centre more than :data:`RING_CENTRE_TOLERANCE_PX` off the centre of
    the rings, or a scatter around the ring mean above :data:`RING_SCATTER_LIMIT` times
    the pixel-to-pixel scatter (off-centre rings beyond the reach of the centre fit)."""
    named = []
    for p, estimate, tth, profile in zip(positions, estimates, two_theta_rad, profiles):
        offset_px, scatter_ratio = ring_statistics(estimate, tth, profile)
        if np.hypot(*offset_px) > RING_CENTRE_TOLERANCE_PX or scatter_ratio > RING_SCATTER_LIMIT:
            named.append(f"{p.label}: beam centre {np.hypot(*offset_px):.1f} px off the rings' centre (rows "
                         f"{offset_px[0]:+.1f}, columns {offset_px[1]:+.1f}), scatter around the ring mean "
                         f"{scatter_ratio:.2f} x the pixel-to-pixel scatter")
    if named:
        raise GainMapError("frames do not match their PONI at " + "; ".join(named) + f" (plausible <= "
                           f"{RING_CENTRE_TOLERANCE_PX:g} px and <= {RING_SCATTER_LIMIT:g} x): is each PONI that of "
                           "its own frames (not swapped or another position's), is the scatterer isotropic?")


def ring_statistics(estimate: np.ndarray, two_theta_rad: np.ndarray, profile: tuple[np.ndarray, np.ndarray],
                    stride: int = 8, clip_sigma: float = 5.0) -> tuple[np.ndarray, float]:
    """How well a frame matches its PONI, from every ``stride``-th pixel of its gain
    estimate ``C / S(2theta)`` (``S``: the radial profile, bin centres in rad and values).

    Returns
    -------
    offset_px : ndarray
        (rows, columns) px from the centre of the rings to the PONI's beam centre. With
        the beam centre off by ``d`` px, an isotropic scatterer leaves, to first order,
        the dipole ``estimate - 1 = (d ln S / d2theta) (d2theta/drow d_row + d2theta/dcol d_col)``
        under the gain's scatter and the noise: linear least squares after rejecting
        residuals beyond ``clip_sigma`` robust sigmas (damaged pixels). Offsets beyond
        ~150 px come out too small (the first order no longer holds).
    scatter_ratio : float
        Robust scatter of ``estimate`` around its ring mean over that of neighbouring
        samples' differences / sqrt(2): ~1 for a matching PONI (more if the gain has
        module steps), ~8 or more for rings 100 px or more off-centre.
    """
    centres, values = profile
    with np.errstate(invalid="ignore", divide="ignore"):
        log_slope = np.where(values > 0, np.gradient(values, centres) / values, 0.0)
    tth = two_theta_rad[::stride, ::stride]
    slope = np.interp(tth, centres, log_slope)
    design = np.stack([slope * g / stride for g in np.gradient(tth)], axis=-1)
    deviation = estimate[::stride, ::stride] - 1.0
    steps = np.diff(deviation, axis=1)
    ok = np.isfinite(deviation)
    scatter_ratio = _robust_sigma(deviation[ok]) * np.sqrt(2) / _robust_sigma(steps[np.isfinite(steps)])
    design, deviation = design[ok], deviation[ok]
    keep = np.abs(deviation - np.median(deviation)) <= clip_sigma * _robust_sigma(deviation)
    offset_px = np.linalg.lstsq(design[keep], deviation[keep], rcond=None)[0]
    residual = deviation - design @ offset_px
    keep = np.abs(residual - np.median(residual)) <= clip_sigma * _robust_sigma(residual)
    return np.linalg.lstsq(design[keep], deviation[keep], rcond=None)[0], float(scatter_ratio)


def _robust_sigma(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: the standard deviation of normal values."""
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def check_profiles_agree(positions: list[PositionData], profiles: list[tuple[np.ndarray, np.ndarray]],
                         tolerance: float = PROFILE_TOLERANCE) -> None:
    """Raise :class:`GainMapError` naming the positions whose radial profile (bin centres
    in rad, values) deviates from the positions' consensus by more than ``tolerance``.

    The sample does not move: its profile is the same at every position, up to a scale
    (the flux). A PONI that is not its frames' (swapped, another position's) puts pixels
    at wrong 2theta and distorts its position's profile. With two positions both deviate
    alike and both are named.
    """
    deviations = profile_deviations(profiles)
    named = [f"{p.label} by {d:.1%}" for p, d in zip(positions, deviations) if d > tolerance]
    if named:
        raise GainMapError("the scatterer's radial profile, the same at every position, deviates from the positions' "
                           "consensus at " + "; ".join(named) + f" (median relative deviation, plausible <= "
                           f"{tolerance:.0%}): is each PONI that of its own frames (not swapped, not another "
                           "position's or distance's)?")


def profile_deviations(profiles: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per profile (bin centres in rad, values), the median over the 2theta shared with
    another profile of ``|profile / (scale x consensus) - 1|``: consensus = median of the
    scaled profiles, scale = median ratio to it. NaN for a profile sharing no 2theta."""
    step_rad = min(np.median(np.diff(centres)) for centres, _ in profiles)
    grid = np.arange(min(c[0] for c, _ in profiles), max(c[-1] for c, _ in profiles), step_rad)
    curves = np.array([np.interp(grid, c, v, left=np.nan, right=np.nan) for c, v in profiles])
    curves = curves[:, np.isfinite(curves).sum(axis=0) >= 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: profiles sharing no 2theta
        scale = np.nanmedian(curves, axis=1, keepdims=True)
        for _ in range(2):
            consensus = np.nanmedian(curves / scale, axis=0)
            scale = np.nanmedian(curves / consensus, axis=1, keepdims=True)
        return np.nanmedian(np.abs(curves / (scale * consensus) - 1), axis=1)


def _combine(prepared: list[PositionPixels], estimates: tuple[np.ndarray, ...], weights: tuple[np.ndarray, ...],
             clip_sigma: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Photon-weighted mean over positions of the per-pixel ``estimates`` (a flat detector
    image, NaN where no position has a finite estimate of positive weight) and the total
    weight; with ``clip_sigma``, positions more than that many Poisson sigmas from the
    mean are rejected and it is recomputed (only in the final round: the rejection costs
    as much as the mean)."""
    size = prepared[0].two_theta_map_rad.size
    mean, total = _weighted_mean(prepared, estimates, weights, size)
    if clip_sigma is not None:
        mean, total = _weighted_mean(prepared, estimates, weights, size, mean, clip_sigma)
    return mean, total


def _weighted_mean(prepared: list[PositionPixels], estimates: tuple[np.ndarray, ...],
                   weights: tuple[np.ndarray, ...], size: int, around: np.ndarray | None = None,
                   clip_sigma: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Per detector pixel (flat, ``size``), the weighted mean of the positions' finite
    estimates of positive weight (NaN where there is none) and the sum of their weights;
    with ``around`` (a mean), only the estimates within ``clip_sigma`` Poisson sigmas of it."""
    weighted, total = np.zeros(size), np.zeros(size)
    clip = around is not None
    reference = around if clip else total  # not read without clipping
    for p, estimate, weight in zip(prepared, estimates, weights):
        _accumulate(p.pixels, estimate, weight, reference, clip, clip_sigma, weighted, total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weighted / total, np.nan), total


@numba.njit(cache=True, nogil=True)
def _accumulate(pixels: np.ndarray, estimate: np.ndarray, weight: np.ndarray, mean: np.ndarray, clip: bool,
                clip_sigma: float, weighted: np.ndarray, total: np.ndarray) -> None:
    """Add one position's ``weight * estimate`` and ``weight`` (one per usable pixel, at
    the flat detector indices ``pixels``) into ``weighted`` and ``total``: the finite
    estimates of positive weight, and with ``clip`` only those within ``clip_sigma``
    Poisson sigmas (``max(mean, 1e-3) / sqrt(weight)``) of the detector image ``mean``."""
    for i in range(pixels.size):
        e, w, p = estimate[i], weight[i], pixels[i]
        if not (np.isfinite(e) and w > 0):
            continue
        if clip and not abs(e - mean[p]) <= clip_sigma * max(mean[p], 1e-3) / np.sqrt(max(w, 1e-12)) + 1e-12:
            continue
        weighted[p] += w * e
        total[p] += w


def _finish(gain: np.ndarray, photons: np.ndarray, dark_rate: np.ndarray | None,
            positions: list[PositionData], settings: GainMapSettings) -> GainMap:
    never_seen = ~np.isfinite(gain)
    filled = np.where(never_seen, 1.0, gain)
    local = _local_baseline(filled, positions[0].poni.detector_model(), settings.local_window)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = filled / np.sqrt(np.maximum(photons, 1e-12))  # counts = gain x Poisson photons
    resid = filled - local
    valid = ~never_seen & (photons > 0)
    spread = 1.4826 * np.median(np.abs(resid[valid] - np.median(resid[valid])))
    z = resid / np.hypot(spread, sigma)
    dead = valid & (filled < settings.dead_below)
    damaged = valid & ~dead & (np.abs(z) > settings.bad_sigma)
    hot = np.zeros_like(dead)
    if dark_rate is not None:
        d = dark_rate[valid]
        d_spread = 1.4826 * np.median(np.abs(d - np.median(d))) + np.sqrt(max(np.median(d), 1.0))
        hot = valid & (dark_rate - np.median(d) > settings.hot_dark_sigma * d_spread)
    bad = never_seen | dead | damaged | hot
    check_gain_plausible(filled, bad, valid)
    if settings.smooth_window > 1:
        smooth = ndimage.generic_filter(np.where(bad, np.nan, filled), np.nanmedian, size=settings.smooth_window)
        filled = np.where(bad, filled, smooth)
    stats = {
        "positions": len(positions),
        "frames": int(sum(p.n_frames for p in positions)),
        "median_photons_per_pixel": float(np.median(photons[valid])),
        "gain_rms": float(np.std(filled[valid & ~bad])),
        "median_sigma": float(np.median(sigma[valid & ~bad])),
        "dead": int(dead.sum()), "damaged_or_outlier": int(damaged.sum()), "hot": int(hot.sum()),
        "never_seen": int(never_seen.sum()),
    }
    return GainMap(filled.astype(np.float32), bad, np.where(valid, sigma, np.nan).astype(np.float32), stats)


def check_gain_plausible(gain: np.ndarray, bad: np.ndarray, seen: np.ndarray, stride: int = 2) -> None:
    """Raise :class:`GainMapError` if more than :data:`MAX_BAD_FRACTION` of the ``seen``
    pixels are flagged ``bad`` or the robust spread (IQR / 1.349, of every ``stride``-th
    pixel) of the good pixels' ``gain`` (median 1) exceeds :data:`MAX_GAIN_SPREAD`."""
    bad_fraction = (bad & seen).sum() / seen.sum()
    if bad_fraction > MAX_BAD_FRACTION:
        raise GainMapError(f"{bad_fraction:.1%} of the seen pixels are flagged bad (plausible <= "
                           f"{MAX_BAD_FRACTION:.0%}): do the frames, masks and PONIs belong together?")
    good = (seen & ~bad)[::stride, ::stride]
    q1, q3 = np.quantile(gain[::stride, ::stride][good], [0.25, 0.75])
    spread = (q3 - q1) / 1.349
    if spread > MAX_GAIN_SPREAD:
        raise GainMapError(f"the gain's robust spread is {spread:.1%} (plausible <= {MAX_GAIN_SPREAD:.0%}): do the "
                           "frames, masks and PONIs belong together?")


def _local_baseline(gain: np.ndarray, det, window: int) -> np.ndarray:
    """What a pixel's gain is compared with to flag it: the median of its module
    (a module's gain is flat up to pixel noise), or for a detector without modules the
    median of a ``window`` x ``window`` neighbourhood."""
    slices = module_slices(det)
    if len(slices) == 1:
        return ndimage.median_filter(gain, size=window, mode="nearest")
    baseline = np.ones_like(gain)
    for rows, cols in slices:
        baseline[rows, cols] = np.median(gain[rows, cols])
    return baseline


def _interp_extrapolate(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Linear interpolation inside ``xp``, linear extrapolation from the end bins outside."""
    out = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    if lo.any():
        out[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    if hi.any():
        out[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return out


def published_gain_map(positions: list[PositionData], *, n_bins: int = 2000, high_sigma: float = 4.0,
                       median_window: int = 3, polarization_factor: float = 0.99) -> np.ndarray:
    """A faithful re-implementation of the published notebook method (for comparison).

    Polarization-corrected mean frames; per position the median of pixel values in
    2theta bins, the value placed at the bin's lower edge; a high-2theta region not
    covered by every position extrapolated linearly; the expected image per position
    from that profile (averaged over positions); per-position gain = frame / expected,
    normalised to median 1; positions combined with a plain median (one NaN makes the
    pixel 0); pixels above mean + 4 std kept raw, the rest median-filtered (3 px).
    """
    tths, profiles, values = [], [], []
    edges_all = []
    for p in positions:
        pix = pixel_geometry(p.poni, polarization_factor)
        c = np.where(p.mask, np.nan, p.mean_frame / pix.polarization)
        t = pix.two_theta
        edges = np.linspace(np.nanmin(t), np.nanmax(t), n_bins + 1)
        idx = np.clip(np.digitize(t, edges) - 1, 0, n_bins - 1)
        prof = np.full(n_bins, np.nan)
        order = np.argsort(idx, axis=None)
        sorted_idx, sorted_c = idx.ravel()[order], c.ravel()[order]
        bounds = np.searchsorted(sorted_idx, np.arange(n_bins + 1))
        for b in range(n_bins):
            seg = sorted_c[bounds[b]:bounds[b + 1]]
            seg = seg[np.isfinite(seg)]  # masked pixels (gaps, beamstop) left out of the profile
            if seg.size:
                prof[b] = np.median(seg)
        edges_all.append(edges[:-1])  # value placed at the lower bin edge
        tths.append(t)
        profiles.append(prof)
        values.append(c)
    common_max = min(e[-1] for e in edges_all)
    gains = []
    for t, c, e, prof in zip(tths, values, edges_all, profiles):
        ok = np.isfinite(prof) & (e <= common_max)
        expected = _interp_extrapolate(t, e[ok], prof[ok])
        g = c / expected
        gains.append(g / np.nanmedian(g))
    combined = np.median(np.array(gains), axis=0)
    combined = np.where(np.isnan(combined), 0.0, combined)
    damaged = combined > combined.mean() + high_sigma * combined.std()
    smoothed = ndimage.median_filter(combined, size=median_window)
    return np.where(damaged, combined, smoothed)
