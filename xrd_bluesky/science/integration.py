"""Azimuthal integration of corrected frames with pyFAI's geometry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ShapeMismatchError
from .geometry import Poni

#: pyFAI integration method: bounding-box pixel splitting, CSR sparse matrix, Cython.
METHOD = ("bbox", "csr", "cython")

#: pyFAI unit names and the units written on data keys.
UNITS = {"q_nm^-1": "1/nm", "2th_deg": "deg", "q_A^-1": "1/A"}


@dataclass(frozen=True)
class IntegrationResult:
    """A 1D pattern with its units: radial positions, intensity and its 1-sigma error.

    ``intensity`` is in counts per pixel of the PONI's solid angle (pyFAI's
    solid-angle normalisation) after dark subtraction and polarization correction;
    bins without any valid pixel are NaN. A 2D cake has ``azimuthal`` bin centres (deg)
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
    """Raise :class:`ShapeMismatchError` unless ``frame`` fits the geometry's detector.

    The check is explicit (not an ``assert``), so it also holds under ``python -O``.
    """
    shape = poni.detector_model().shape
    if np.ndim(frame) != 2 or (shape is not None and np.shape(frame) != tuple(shape)):
        raise ShapeMismatchError(
            f"{source} has shape {np.shape(frame)}, detector {poni.detector!r} needs {tuple(shape or ())}")


def invalid_pixels(frame: np.ndarray, poni: Poni, max_count: int | None = None,
                   static_mask: np.ndarray | None = None) -> np.ndarray:
    """Mask (True = bad) of the detector's gaps, non-finite, negative and saturated
    pixels of ``frame``, and of ``static_mask``."""
    check_frame_shape(frame, poni)
    det = poni.detector_model()
    mask = np.zeros(frame.shape, bool) if det.mask is None else det.mask.astype(bool).copy()
    with np.errstate(invalid="ignore"):
        mask |= ~np.isfinite(frame) | (frame < 0)
        if max_count is not None:
            mask |= frame >= max_count
    if static_mask is not None:
        check_frame_shape(static_mask, poni, "mask")
        mask |= static_mask.astype(bool)
    return mask


def integrate_1d(frame: np.ndarray, poni: Poni, *, npt: int = 2000, unit: str = "q_nm^-1",
                 dark: np.ndarray | None = None, flat: np.ndarray | None = None,
                 mask: np.ndarray | None = None, polarization_factor: float | None = 0.99) -> IntegrationResult:
    """Dark-subtract, mask, correct (solid angle, polarization) and integrate to 1D.

    Parameters
    ----------
    frame : ndarray
        Raw counts.
    poni : Poni
        Geometry.
    npt : int
        Number of radial bins.
    unit : str
        pyFAI radial unit: ``"q_nm^-1"`` (1/nm), ``"2th_deg"`` (deg) or ``"q_A^-1"`` (1/A).
    dark : ndarray, optional
        Dark frame (counts) of the same exposure.
    flat : ndarray, optional
        Gain map: the dark-subtracted frame is divided by it.
    mask : ndarray, optional
        True = bad pixel.
    polarization_factor : float or None
        pyFAI polarization factor; None for no correction.
    """
    if unit not in UNITS:
        raise ValueError(f"unknown radial unit {unit!r}; use one of {sorted(UNITS)}")
    check_frame_shape(frame, poni)
    data = np.asarray(frame, dtype=np.float32)
    res = poni.integrator().integrate1d(
        data, npt, unit=unit, method=METHOD, dark=dark, flat=flat, mask=mask,
        polarization_factor=polarization_factor, correctSolidAngle=True, error_model="poisson",
    )
    count = np.asarray(res.count)
    empty = count <= 0
    intensity = np.where(empty, np.nan, res.intensity)
    sigma = np.where(empty, np.nan, res.sigma)
    return IntegrationResult(np.asarray(res.radial), intensity, sigma, unit, count)
