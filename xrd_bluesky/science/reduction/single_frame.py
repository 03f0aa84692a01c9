"""One frame integrated to 1D in one call: the package's corrected integration
(:mod:`.corrected_integration`) set up for a single frame whose invalid pixels become
the mask."""

from __future__ import annotations

import numpy as np

from ..geometry import Poni
from .corrected_integration import CorrectedIntegrator
from .integration import IntegrationResult, check_binning, check_frame_shape, check_max_count, valid_somewhere


def integrate_1d(frame: np.ndarray, poni: Poni, *, npt: int = 2000, unit: str = "q_nm^-1",
                 dark: np.ndarray | None = None, flat: np.ndarray | None = None,
                 mask: np.ndarray | None = None, polarization_factor: float | None = 0.99,
                 max_count: float | None = None, source: str = "frame") -> IntegrationResult:
    """One frame integrated to 1D with the package's one definition,
    :class:`~xrd_bluesky.science.reduction.corrected_integration.CorrectedIntegrator` (counts per
    steradian): a convenience for a single frame, whose invalid pixels become the mask.

    Besides ``mask``, the detector's gaps and the pixels of ``frame`` that are
    non-finite (also after conversion to float32), negative or saturated are masked,
    and the pixels whose ``flat`` is not finite and positive, so that the radial range
    is that of the valid pixels.

    Parameters
    ----------
    frame : ndarray
        Raw counts.
    poni : Poni
        Geometry.
    npt : int
        Number of radial bins (>= 1).
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
    max_count : float, optional
        Counts at and above which a pixel is saturated (masked).
    source : str
        What ``frame`` is (e.g. a file name), for error messages.

    Raises
    ------
    GeometryError
        ``npt``, ``unit`` or ``max_count`` is unusable.
    ShapeMismatchError
        ``frame``, ``dark``, ``flat`` or ``mask`` does not fit the detector.
    InvalidFrameError
        Every pixel of ``frame`` is masked or invalid.
    """
    check_binning(npt, unit)
    check_max_count(max_count)
    check_frame_shape(frame, poni, source)
    static = np.zeros(np.shape(frame), bool)
    for name, array in (("mask", mask), ("dark", dark), ("flat", flat)):
        if array is not None:
            check_frame_shape(array, poni, name)
    if mask is not None:
        static |= np.asarray(mask, bool)
    if dark is not None:
        static |= ~np.isfinite(dark)
    if flat is not None:
        with np.errstate(invalid="ignore"):
            static |= ~(np.isfinite(flat) & (np.asarray(flat) > 0))
    with np.errstate(over="ignore"):  # counts beyond float32 become inf: invalid
        data = np.asarray(frame, dtype=np.float32)
    invalid = valid_somewhere(data, poni, max_count, static, source)
    integrator = CorrectedIntegrator(poni, npt=npt, unit=unit, mask=invalid, gain=flat, dark=dark,
                                     polarization_factor=polarization_factor, max_count=max_count)
    return integrator.sums(data, source).result()
