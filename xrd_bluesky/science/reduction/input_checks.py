"""Plausibility of the images that go with a frame: darks, gain maps, masks and the
saturation level, checked against the frame and against physics before an analysis.

Each check raises :class:`~xrd_bluesky.errors.ImplausibleInputError` when the input
cannot be right, or warns (:class:`~xrd_bluesky.errors.PlausibilityWarning`) when it is
unusual but may be; both messages name the value and the plausible range.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from ...errors import ImplausibleInputError, PlausibilityWarning

#: Masked fraction of the pixels above which a mask is refused (non-zero = bad: an
#: inverted mask masks nearly everything) and above which it is reported.
MASK_REFUSED_FRACTION = 0.5
MASK_WARNED_FRACTION = 0.25

#: Plausible median of a gain map (dimensionless, normalised to about 1).
GAIN_MEDIAN_RANGE = (0.5, 2.0)
#: Fraction of unusable gain pixels above which the gain map is reported.
GAIN_BAD_WARNED_FRACTION = 0.2

#: A pixel of ``frame - dark`` is significantly negative below this many sigma.
DARK_NEGATIVE_SIGMA = 5.0
#: Fraction of significantly negative pixels after dark subtraction above which the
#: dark is refused, and above which it is reported.
DARK_REFUSED_FRACTION = 0.1
DARK_WARNED_FRACTION = 0.01
#: Pixels on which the dark check estimates its fractions.
DARK_SAMPLE_PIXELS = 20_000
#: Largest relative difference of the dark's and the frame's exposure times.
EXPOSURE_TOLERANCE = 0.01

#: Fraction of saturated pixels above which a frame is refused (a saturation level at
#: or below the frame's median is not the detector's) and above which it is reported,
#: also when that fraction is reached in a single ring.
SATURATED_REFUSED_FRACTION = 0.5
SATURATED_WARNED_FRACTION = 0.01
#: Width (deg of 2theta) of the rings in which the saturated fraction is counted.
RING_BAND_DEG = 0.1


def check_mask(mask: np.ndarray, source: str) -> None:
    """Refuse a mask (True = bad) that masks more than :data:`MASK_REFUSED_FRACTION`
    of the pixels; warn above :data:`MASK_WARNED_FRACTION`."""
    fraction = float(np.count_nonzero(mask)) / max(np.size(mask), 1)
    if fraction > MASK_REFUSED_FRACTION:
        raise ImplausibleInputError(
            f"{source} masks {fraction:.1%} of the pixels (non-zero = bad; a mask rarely exceeds "
            f"{MASK_REFUSED_FRACTION:.0%}): is it inverted?")
    if fraction > MASK_WARNED_FRACTION:
        warnings.warn(f"{source} masks {fraction:.1%} of the pixels (usually below {MASK_WARNED_FRACTION:.0%})",
                      PlausibilityWarning, stacklevel=2)


def check_gain(gain: np.ndarray, bad: np.ndarray, source: str) -> None:
    """Refuse a gain map (``corrected = raw / gain``) whose median over its usable
    pixels is outside :data:`GAIN_MEDIAN_RANGE` (a flat field in counts, not
    normalised); warn when more than :data:`GAIN_BAD_WARNED_FRACTION` of it is
    unusable."""
    good = np.asarray(gain)[~bad]
    if good.size == 0:
        raise ImplausibleInputError(f"{source} has no finite positive pixel")
    median = float(np.median(good[:: max(1, good.size // 100_000)]))  # on 100000 pixels at most
    low, high = GAIN_MEDIAN_RANGE
    if not low <= median <= high:
        raise ImplausibleInputError(
            f"{source} has a median of {median:.4g}; a gain map is dimensionless with a median near 1 "
            f"({low:g}-{high:g}): a flat field in counts must be divided by its median first")
    fraction = 1.0 - good.size / max(np.size(gain), 1)
    if fraction > GAIN_BAD_WARNED_FRACTION:
        warnings.warn(f"{source}: {fraction:.1%} of its pixels are not finite and positive (masked); usually "
                      f"below {GAIN_BAD_WARNED_FRACTION:.0%}", PlausibilityWarning, stacklevel=2)


def check_exposures(dark_s: float | None, frame_s: float | None, dark_source: str, frame_source: str) -> None:
    """Refuse a dark whose exposure time (s) differs from the frame's by more than
    :data:`EXPOSURE_TOLERANCE`, when both files say theirs."""
    if dark_s is None or frame_s is None:
        return
    if not math.isclose(dark_s, frame_s, rel_tol=EXPOSURE_TOLERANCE):
        raise ImplausibleInputError(
            f"{dark_source} was exposed {dark_s:.6g} s, {frame_source} {frame_s:.6g} s: a dark must have the "
            f"frame's exposure (within {EXPOSURE_TOLERANCE:.0%})")


def check_dark(dark: np.ndarray, frame: np.ndarray, bad: np.ndarray | None, max_count: float | None,
               dark_source: str, frame_source: str) -> None:
    """Refuse a dark that makes more than :data:`DARK_REFUSED_FRACTION` of the valid
    pixels of ``frame - dark`` negative by more than :data:`DARK_NEGATIVE_SIGMA` sigma
    (a dark of a longer exposure, of another detector, or the frame itself with a
    sample); warn above :data:`DARK_WARNED_FRACTION`.

    Valid pixels are those not ``bad`` (True = bad), finite, not negative and below
    ``max_count`` in both images. Sigma per pixel is the larger of the Poisson noise of
    the dark and the dark's robust spread over the detector (read-out noise and fixed
    pattern of integrating detectors, whose counts are not photons). The fractions are
    estimated on :data:`DARK_SAMPLE_PIXELS` pixels spread over the detector (a
    binomial error of 0.4 % at most), so that the check costs little per frame."""
    step = max(1, np.size(frame) // DARK_SAMPLE_PIXELS)
    d = np.asarray(dark).ravel()[::step].astype(np.float64)
    f = np.asarray(frame).ravel()[::step].astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & np.isfinite(f) & (d >= 0) & (f >= 0)
        if max_count is not None:
            valid &= (f < max_count) & (d < max_count)
    if bad is not None:
        valid &= ~np.asarray(bad).ravel()[::step]
    d, f = d[valid], f[valid]
    if d.size == 0:
        return
    median = float(np.median(d))
    spread = 1.4826 * float(np.median(np.abs(d - median)))
    sigma = np.maximum(np.sqrt(np.abs(d) + 1.0), spread)
    fraction = float(np.count_nonzero(f - d < -DARK_NEGATIVE_SIGMA * sigma)) / d.size
    if fraction <= DARK_WARNED_FRACTION:
        return
    detail = (f"{fraction:.1%} of the valid pixels of {frame_source} fall more than {DARK_NEGATIVE_SIGMA:g} sigma "
              f"below {dark_source} (median frame {np.median(f):.4g}, median dark {median:.4g} counts)")
    if fraction > DARK_REFUSED_FRACTION:
        raise ImplausibleInputError(f"{detail}: the dark is brighter than the frame (another exposure time or "
                                    f"detector?); at most {DARK_REFUSED_FRACTION:.0%} may")
    warnings.warn(f"{detail}; usually below {DARK_WARNED_FRACTION:.0%}", PlausibilityWarning, stacklevel=2)


def default_max_count(dtype: np.dtype, count_cutoff: float | None = None) -> float | None:
    """Counts at and above which a pixel is saturated or a marker, when the user says
    nothing: above the detector's count cut-off when its header gives one, else the
    largest value of an integer type (0xFFFFFFFF, 65535... are the bad-pixel and
    overflow markers of counting detectors); None for floating-point frames."""
    if count_cutoff is not None:
        return math.floor(count_cutoff) + 1
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return float(np.iinfo(dtype).max)
    return None


def check_saturation(frame: np.ndarray, max_count: float | None, source: str,
                     two_theta_deg: Callable[[], np.ndarray] | None = None) -> None:
    """Refuse a saturation level ``max_count`` (counts) at or above which more than
    :data:`SATURATED_REFUSED_FRACTION` of ``frame``'s pixels lie; warn when more than
    :data:`SATURATED_WARNED_FRACTION` of them do (estimated on every 16th pixel) or, when
    ``two_theta_deg`` gives each pixel's 2theta (deg), of the pixels of a ring (a band of
    :data:`RING_BAND_DEG`): saturated pixels are masked, so such a ring's intensity is
    underestimated.

    Raises
    ------
    ImplausibleInputError
        When more than :data:`SATURATED_REFUSED_FRACTION` of the pixels are saturated.
    """
    if max_count is None:
        return
    frame = np.asarray(frame)
    sample = frame.ravel()[::16]
    with np.errstate(invalid="ignore"):
        fraction = float(np.count_nonzero(sample >= max_count)) / max(sample.size, 1)
    about = f"{source}: {fraction:.1%} of the pixels are saturated (>= {max_count:g} counts) and masked"
    if fraction > SATURATED_REFUSED_FRACTION:
        raise ImplausibleInputError(f"{about}; the frame's median is {float(np.nanmedian(sample)):g} counts: a "
                                    "saturation level at or below the background is not the detector's")
    if fraction > SATURATED_WARNED_FRACTION:
        warnings.warn(f"{about}; usually below {SATURATED_WARNED_FRACTION:.0%}", PlausibilityWarning, stacklevel=2)
    elif two_theta_deg is not None:
        _check_saturated_rings(frame, max_count, two_theta_deg, source)


def _check_saturated_rings(frame: np.ndarray, max_count: float, two_theta_deg: Callable[[], np.ndarray],
                           source: str) -> None:
    """Warn, naming their 2theta (deg), of the rings more than
    :data:`SATURATED_WARNED_FRACTION` of whose pixels are at or above ``max_count``."""
    with np.errstate(invalid="ignore"):
        saturated = np.asarray(frame >= max_count).ravel()
    if not saturated.any():
        return
    band = np.floor(np.asarray(two_theta_deg(), dtype=float).ravel() / RING_BAND_DEG).astype(np.int64)
    first = int(band.min())
    band -= first
    fraction = np.bincount(band, weights=saturated) / np.maximum(np.bincount(band), 1)
    flagged = np.flatnonzero(fraction > SATURATED_WARNED_FRACTION)
    if flagged.size:
        spans = ", ".join(f"{(first + lo) * RING_BAND_DEG:.1f}-{(first + hi + 1) * RING_BAND_DEG:.1f}"
                          for lo, hi in _runs(flagged))
        warnings.warn(f"{source}: up to {fraction[flagged].max():.0%} of the pixels of the rings at 2theta {spans} deg "
                      f"are saturated (>= {max_count:g} counts) and masked: the pattern underestimates them there",
                      PlausibilityWarning, stacklevel=3)


def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive integers of the sorted ``indices``, as (first, last) pairs."""
    breaks = np.flatnonzero(np.diff(indices) > 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [indices.size - 1]])
    return [(int(indices[a]), int(indices[b])) for a, b in zip(starts, ends)]
