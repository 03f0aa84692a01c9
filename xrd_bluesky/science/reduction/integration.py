"""Azimuthal integration of corrected frames with pyFAI's geometry."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...errors import GeometryError, InvalidFrameError, ShapeMismatchError
from ..geometry import Poni

#: pyFAI unit names and the units written on data keys.
UNITS = {"q_nm^-1": "1/nm", "2th_deg": "deg", "q_A^-1": "1/A"}

#: numpy kinds of arrays that hold counts: boolean, signed and unsigned integer, float.
COUNT_KINDS = "biuf"

#: Most radial bins of a 1D pattern (a 4k-pixel-wide detector has about 6000 pixels of radius).
MAX_RADIAL_BINS = 100_000
#: Fewest radial bins of a pattern (fewer do not resolve a ring).
MIN_RADIAL_BINS = 10
#: Most bins of a 2D cake, radial x azimuthal (pyFAI holds several float64 arrays of it).
MAX_CAKE_BINS = 20_000_000


@dataclass(frozen=True)
class IntegrationResult:
    """A 1D pattern with its units: radial positions, intensity and its 1-sigma error.

    ``intensity`` is in counts per steradian (absolute solid angle) after dark
    subtraction, gain and polarization correction (:mod:`.corrected_integration`), or
    in a unit derived from it (1/cm/sr on the absolute scale); bins without any valid
    pixel are NaN. A 2D cake has ``azimuthal`` bin centres (deg)
    and arrays of shape ``(len(azimuthal), len(radial))``.
    """

    radial: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    unit: str
    count: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    azimuthal: np.ndarray | None = field(repr=False, default=None)

    @property
    def radial_units(self) -> str:
        return UNITS[self.unit]


def check_frame_shape(frame: np.ndarray, poni: Poni, source: str = "frame") -> None:
    """Raise :class:`ShapeMismatchError` unless ``frame`` fits the geometry's detector:
    two-dimensional, of the detector's shape, holding numbers (boolean, integer or
    floating point; not complex, text or objects).

    The check is explicit (not an ``assert``), so it also holds under ``python -O``.
    """
    shape = poni.detector_model().shape
    if np.ndim(frame) != 2 or (shape is not None and np.shape(frame) != tuple(shape)):
        raise ShapeMismatchError(
            f"{source} has shape {np.shape(frame)}, detector {poni.detector!r} needs {tuple(shape or ())}")
    dtype = np.asarray(frame).dtype
    if dtype.kind not in COUNT_KINDS:
        raise ShapeMismatchError(f"{source} holds {dtype} values, not counts (real numbers)")


def check_binning(npt: int, unit: str, npt_azim: int | None = None) -> None:
    """Raise :class:`GeometryError` naming the value unless ``npt`` (and ``npt_azim``, if
    given) is a whole number of bins >= 1, at most :data:`MAX_RADIAL_BINS` (and
    :data:`MAX_CAKE_BINS` in all), and ``unit`` one of :data:`UNITS`."""
    if unit not in UNITS:
        raise GeometryError(f"unknown radial unit {unit!r}; use one of {sorted(UNITS)}")
    for name, value in (("npt", npt), ("npt_azim", npt_azim)):
        if name == "npt" or value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise GeometryError(f"{name}={value!r}: the number of bins must be a whole number >= 1")
    if npt > MAX_RADIAL_BINS:
        raise GeometryError(f"npt={npt} radial bins is more than {MAX_RADIAL_BINS}: no detector has that many "
                            "pixels of radius")
    if npt_azim is not None and npt * npt_azim > MAX_CAKE_BINS:
        raise GeometryError(f"a cake of npt={npt} x npt_azim={npt_azim} bins is more than {MAX_CAKE_BINS} bins")


def check_max_count(max_count: float | None) -> None:
    """Raise :class:`GeometryError` naming the value unless ``max_count`` (the counts at
    and above which a pixel is saturated) is None or a number > 0."""
    if max_count is not None and (isinstance(max_count, bool) or not isinstance(max_count, (int, float, np.number))
                                  or not max_count > 0):
        raise GeometryError(f"saturation level max_count={max_count!r} counts is not a positive number")


def radial_coverage(poni: Poni, unit: str, valid: np.ndarray | None = None) -> tuple[float, float]:
    """The radial range (in ``unit``) of the pixel centres of the detector, or of its
    ``valid`` pixels (True = good); ``(nan, nan)`` when there are none."""
    radial = poni.integrator().array_from_unit(unit=unit)
    if valid is not None:
        radial = radial[valid]
    radial = radial[np.isfinite(radial)]
    if radial.size == 0:
        return math.nan, math.nan
    return float(radial.min()), float(radial.max())


def radial_bounds(radial_range, unit: str) -> tuple[float, float]:
    """``radial_range`` (in ``unit``) as two floats; :class:`GeometryError` naming it
    unless they are finite and increasing."""
    try:
        lo, hi = (float(v) for v in radial_range)
    except (TypeError, ValueError):
        raise GeometryError(f"radial range {radial_range!r} {UNITS[unit]} is not two numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise GeometryError(f"radial range {radial_range} {UNITS[unit]} is empty or reversed")
    return lo, hi


def check_radial_range(poni: Poni, unit: str, radial_range: tuple[float, float] | None,
                       valid: np.ndarray | None = None) -> None:
    """Raise :class:`GeometryError` naming the range when ``radial_range`` (in ``unit``)
    is not two finite increasing numbers or lies outside what the (``valid``) pixel
    centres of the detector cover; ``None`` (the detector's own coverage) passes."""
    if radial_range is None:
        return
    lo, hi = radial_bounds(radial_range, unit)
    low, high = radial_coverage(poni, unit, valid)
    if not (lo < high and hi > low):
        raise GeometryError(f"radial range {lo:.6g}-{hi:.6g} {UNITS[unit]} ({unit}) is empty: the valid pixels "
                            f"of detector {poni.detector!r} cover {low:.6g}-{high:.6g} {UNITS[unit]}")


def invalid_pixels(frame: np.ndarray, poni: Poni, max_count: float | None = None,
                   static_mask: np.ndarray | None = None, source: str = "frame") -> np.ndarray:
    """Mask (True = bad) of the detector's gaps, non-finite, negative and saturated
    (at or above ``max_count`` counts) pixels of ``frame``, and of ``static_mask``."""
    check_frame_shape(frame, poni, source)
    det = poni.detector_model()
    mask = np.zeros(np.shape(frame), bool) if det.mask is None else det.mask.astype(bool).copy()
    with np.errstate(invalid="ignore", over="ignore"):  # NaN; a max_count beyond the dtype's range
        mask |= ~np.isfinite(frame) | (frame < 0)
        if max_count is not None:
            mask |= frame >= max_count
    if static_mask is not None:
        check_frame_shape(static_mask, poni, "mask")
        mask |= static_mask.astype(bool)
    return mask


def describe_invalid(frame: np.ndarray, max_count: float | None = None) -> str:
    """How many pixels of ``frame`` are NaN, infinite, negative and saturated (at or
    above ``max_count`` counts), for error messages."""
    frame = np.asarray(frame)
    with np.errstate(invalid="ignore", over="ignore"):
        counts = {"NaN": np.isnan(frame).sum(), "infinite": np.isinf(frame).sum(), "negative": (frame < 0).sum()}
        if max_count is not None:
            counts[f"saturated (>= {max_count:g} counts)"] = (frame >= max_count).sum()
    return f"{frame.size} pixels, of which " + ", ".join(f"{int(n)} {what}" for what, n in counts.items())


def valid_somewhere(frame: np.ndarray, poni: Poni, max_count: float | None, static: np.ndarray | None,
                    source: str) -> np.ndarray:
    """The mask of the invalid pixels of ``frame`` (:func:`invalid_pixels`), or
    :class:`InvalidFrameError` naming ``source`` and what is wrong when every pixel is
    masked (``static``: the mask, a non-finite dark, a non-positive gain) or invalid."""
    invalid = invalid_pixels(frame, poni, max_count, static, source)
    if invalid.all():
        masked = 0 if static is None else int(np.count_nonzero(static))
        raise InvalidFrameError(f"{source}: every pixel is masked or invalid, nothing to integrate "
                                f"({describe_invalid(frame, max_count)}; {masked} masked by the "
                                "mask, a non-finite dark or a non-positive flat)")
    return invalid
