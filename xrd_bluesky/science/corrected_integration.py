"""Fully corrected azimuthal integration, prepared once per geometry and fast per frame.

Corrections, with pyFAI's definitions (``pyFAI.engines.preproc``):

* signal ``raw - dark`` (counts);
* Poisson variance ``max(raw, 1)`` (counts^2; what pyFAI's CSR engine computes — its
  docstring's ``+ dark`` is not applied; the dark is an average of several frames);
* normalization ``gain x polarization x solid angle`` with the **absolute** solid angle
  of each pixel, ``pixel1 * pixel2 / dist**2 * cos(incidence)**3`` (sr), so
  intensities are counts per steradian;
* mask: the detector's gaps, the given static mask (beamstop, bad pixels, non-positive
  or non-finite gain) and, per frame, its negative, non-finite and saturated pixels.

Per bin, over pixels weighted by pyFAI's bounding-box pixel-splitting coefficients
``c``: intensity ``sum c*signal / sum c*norm`` and sigma ``sqrt(sum c**2*variance) /
sum c*norm`` (pyFAI's standard error of the mean). The sums are kept
(:class:`BinSums`) so patterns of several frames or detector positions combine exactly
as pyFAI's ``MultiGeometry`` does: add the sums, then divide.

The pixel-splitting matrix comes from pyFAI's own CSR engine; constant per-bin sums
(normalization, dark, pixel count) are computed once, leaving one fused pass per frame
(:func:`~xrd_bluesky.science.integration_kernel.fused_bin_sums`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse

from ..errors import GeometryError, InvalidFrameError
from .integration_kernel import balanced_ranges, fused_bin_sums
from .geometry import Poni
from .integration import (IntegrationResult, check_binning, check_frame_shape, check_max_count, check_radial_range,
                          describe_invalid)

#: Frame dtypes the compiled kernel takes as they are; frames of other real dtypes are
#: converted to float64 (one compiled version per dtype, each compiled once).
KERNEL_DTYPES = tuple(np.dtype(t) for t in (np.uint16, np.uint32, np.int32, np.float32, np.float64))

@dataclass(frozen=True)
class BinSums:
    """Per-bin sums of an integration, before the division (all float64 arrays).

    Attributes
    ----------
    radial : ndarray
        Bin centres in ``unit`` (1D: radial; 2D cake: radial of each column).
    signal : ndarray
        ``sum c*(raw - dark)`` (counts).
    variance : ndarray
        ``sum c**2*max(raw, 1)`` (counts^2).
    normalization : ndarray
        ``sum c*gain*polarization*solid_angle`` (sr).
    count : ndarray
        ``sum c`` over valid pixels (pixels).
    unit : str
        pyFAI radial unit.
    azimuthal : ndarray or None
        Azimuth bin centres (deg) of a 2D cake (rows of the arrays), else None.
    """

    radial: np.ndarray
    signal: np.ndarray
    variance: np.ndarray
    normalization: np.ndarray
    count: np.ndarray
    unit: str
    azimuthal: np.ndarray | None = None

    def __add__(self, other: "BinSums") -> "BinSums":
        if (self.unit != other.unit or self.signal.shape != other.signal.shape
                or not np.allclose(self.radial, other.radial, rtol=1e-9, atol=0)):
            raise ValueError("cannot add integrations with different bins")
        return BinSums(self.radial, self.signal + other.signal, self.variance + other.variance,
                       self.normalization + other.normalization, self.count + other.count,
                       self.unit, self.azimuthal)

    def normalized_by(self, factor: float) -> "BinSums":
        """The same sums with the normalization multiplied by ``factor`` (e.g. a monitor
        or ``flux x exposure x transmission x thickness``): intensities divide by it."""
        return BinSums(self.radial, self.signal, self.variance, self.normalization * factor,
                       self.count, self.unit, self.azimuthal)

    def result(self) -> IntegrationResult:
        """Intensity ``signal / normalization`` and sigma ``sqrt(variance) / normalization``;
        bins without a valid pixel are NaN."""
        empty = (self.count <= 0) | (self.normalization <= 0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            intensity = np.where(empty, np.nan, self.signal / self.normalization)
            sigma = np.where(empty, np.nan, np.sqrt(np.maximum(self.variance, 0)) / self.normalization)
        return IntegrationResult(self.radial, intensity, sigma, self.unit, self.count, self.azimuthal)


class CorrectedIntegrator:
    """Everything constant for one geometry, prepared once; :meth:`sums` per frame.

    Parameters
    ----------
    poni : Poni
        Geometry (distances in m, angles in rad, wavelength in m).
    npt : int
        Number of radial bins (>= 1).
    unit : str
        Radial unit: ``"q_nm^-1"`` (1/nm), ``"q_A^-1"`` (1/A) or ``"2th_deg"`` (deg).
    radial_range : (float, float), optional
        Radial range in ``unit``; default: what the detector covers. Stitching
        (:mod:`~xrd_bluesky.science.multi_geometry`) passes a common range so that
        positions share bins. It must overlap what the valid pixels cover.
    npt_azim : int, optional
        Number of azimuthal bins (>= 1) for a 2D cake (azimuth -180..180 deg); 1D if None.
    mask : ndarray of bool, optional
        Static mask (True = bad), in addition to the detector's gaps.
    gain : ndarray, optional
        Relative gain (flat field); non-positive or non-finite pixels are masked.
    dark : ndarray, optional
        Dark counts of the same exposure (counts); non-finite pixels are masked.
    polarization_factor : float or None
        pyFAI polarization factor (0.99: horizontally polarized synchrotron beam).
    max_count : float, optional
        Counts at and above which a pixel is saturated (masked in that frame).
    split : str
        Pixel splitting: ``"bbox"`` (pyFAI's bounding box: smooth patterns, but a pixel
        shared by neighbouring bins makes their errors correlated) or ``"no"`` (each
        pixel in the bin of its centre: independent bins, as least-squares fits with
        honest uncertainties need).

    Raises
    ------
    GeometryError
        Unusable bins (``npt``, ``npt_azim``, ``unit``, ``split``), a radial range that
        is empty or outside the detector's valid pixels, a detector without a shape, a
        ``max_count`` that is not a positive number, or every pixel masked; all checked
        before the pixel-splitting matrix is built.
    ShapeMismatchError
        ``mask``, ``gain`` or ``dark`` does not fit the detector.
    """

    def __init__(self, poni: Poni, *, npt: int = 2000, unit: str = "q_nm^-1",
                 radial_range: tuple[float, float] | None = None, npt_azim: int | None = None,
                 mask: np.ndarray | None = None, gain: np.ndarray | None = None,
                 dark: np.ndarray | None = None, polarization_factor: float | None = 0.99,
                 max_count: float | None = None, split: str = "bbox"):
        check_binning(npt, unit, npt_azim)
        if split not in SPLITTINGS:
            raise GeometryError(f"unknown pixel splitting {split!r}; use one of {SPLITTINGS}")
        check_max_count(max_count)
        if poni.detector_model().shape is None:
            raise GeometryError(f"detector {poni.detector!r} (config {poni.detector_config!r}) has no shape")
        self.poni, self.unit, self.npt, self.npt_azim = poni, unit, npt, npt_azim
        self.max_count = np.inf if max_count is None else float(max_count)
        ai = poni.integrator()
        shape = tuple(poni.detector_model().shape)
        for name, array in (("mask", mask), ("gain", gain), ("dark", dark)):
            if array is not None:
                check_frame_shape(array, poni, name)
        valid = np.ones(shape, bool) if ai.detector.mask is None else ~ai.detector.mask.astype(bool)
        if mask is not None:
            valid &= ~np.asarray(mask, bool)
        if dark is not None:
            valid &= np.isfinite(dark)
        if gain is not None:
            gain = np.asarray(gain, np.float64)
            with np.errstate(invalid="ignore"):
                valid &= np.isfinite(gain) & (gain > 0)
        if not valid.any():
            raise GeometryError(f"every pixel of detector {poni.detector!r} is masked (mask, gain, dark): "
                                "nothing to integrate")
        check_radial_range(poni, unit, radial_range, valid)
        norm = ai.solidAngleArray(shape, absolute=True).astype(np.float64)
        if polarization_factor is not None:
            norm = norm * ai.polarization(shape, factor=polarization_factor)
        if gain is not None:
            norm = norm * np.where(valid, gain, 0.0)
        self._splitting = pixel_splitting(poni, npt, npt_azim, unit, radial_range, ~valid, split)
        self.radial, self.azimuthal = self._splitting.radial, self._splitting.azimuthal
        self._norm = np.where(valid, norm, 0.0).ravel()
        self._dark = np.zeros(valid.size) if dark is None else np.where(valid, dark, 0.0).ravel()
        m = self._splitting.matrix()
        self._static = np.stack([m @ self._norm, m @ self._dark, m @ valid.ravel().astype(np.float64)], axis=1)
        n_ranges = len(self._splitting.bounds) - 1
        self._acc = np.empty((n_ranges, self.n_bins, 2))
        self._lost = np.empty((n_ranges, self.n_bins, 3))
        self.shape = shape
        self.azimuthal_moments = self._azimuthal_moments(ai, m) if npt_azim else None

    def _azimuthal_moments(self, ai, m) -> tuple[np.ndarray, np.ndarray]:
        """Per cake bin, the normalization-weighted means of cos(2 chi) and sin(2 chi)
        over the pixels it holds (NaN where none): where a bin's pixels really are in
        azimuth when the detector's edge or a gap cuts its sector."""
        chi = ai.center_array(self.shape, unit="chi_rad").ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            return tuple(self._arrange((m @ (self._norm * f(2 * chi))) / self._static[:, 0]) for f in (np.cos, np.sin))

    @property
    def n_bins(self) -> int:
        return self._splitting.n_bins

    def sums(self, frame: np.ndarray, source: str = "frame") -> BinSums:
        """Integrate one frame (raw counts, the detector's shape) into per-bin sums.

        Pixels of ``frame`` that are negative, non-finite or saturated are left out.

        Parameters
        ----------
        frame : ndarray
            Raw counts (any real dtype).
        source : str
            What ``frame`` is (e.g. a file or an event), for error messages.

        Raises
        ------
        ShapeMismatchError
            ``frame`` does not have the detector's shape or does not hold real numbers.
        InvalidFrameError
            No pixel of ``frame`` inside the bins is valid.
        """
        check_frame_shape(frame, self.poni, source)
        frame = np.asarray(frame)
        flat = np.ascontiguousarray(frame if frame.dtype in KERNEL_DTYPES else frame.astype(np.float64)).reshape(-1)
        split = self._splitting
        fused_bin_sums(split.colptr, split.rows, split.coef, split.bounds, flat, self.max_count,
                       self._norm, self._dark, self._acc, self._lost)
        raw, raw_var = self._acc.sum(axis=0).T
        lost_norm, lost_dark, lost_count = self._lost.sum(axis=0).T
        norm, dark, count = self._static.T
        if not np.any(count - lost_count > 1e-9 * count):  # all lost, up to rounding
            max_count = None if np.isinf(self.max_count) else self.max_count
            raise InvalidFrameError(f"{source}: no valid pixel inside the {self.unit} bins, nothing to integrate "
                                    f"({describe_invalid(frame, max_count)})")
        return BinSums(self.radial, self._arrange(raw - (dark - lost_dark)), self._arrange(raw_var),
                       self._arrange(norm - lost_norm), self._arrange(count - lost_count),
                       self.unit, self.azimuthal)

    def _arrange(self, per_bin: np.ndarray) -> np.ndarray:
        """pyFAI numbers 2D bins radial-major; a cake is (azimuth, radial)."""
        return per_bin.reshape(self.npt, self.npt_azim).T.copy() if self.npt_azim else per_bin

    def integrate(self, frame: np.ndarray) -> IntegrationResult:
        """Corrected intensity (counts/sr) and its Poisson sigma of one frame."""
        return self.sums(frame).result()


@dataclass(frozen=True)
class PixelSplitting:
    """pyFAI's bounding-box pixel-splitting matrix (bins x pixels) in CSC form, without
    masked pixels, with the bin centres (radial in the unit; azimuth in deg or None)
    and the per-thread pixel ranges of the kernel."""

    colptr: np.ndarray
    rows: np.ndarray
    coef: np.ndarray
    n_bins: int
    radial: np.ndarray
    azimuthal: np.ndarray | None
    bounds: np.ndarray

    def matrix(self) -> scipy.sparse.csc_matrix:
        """The matrix for scipy products (shares the arrays)."""
        return scipy.sparse.csc_matrix((self.coef, self.rows, self.colptr), shape=(self.n_bins, len(self.colptr) - 1))


#: Recently built pixel-splitting matrices (about 50 MB each for a 2M detector) by
#: geometry, bins, unit, range and mask: one per detector position and unit of a run,
#: shared by the following runs.
#: Pixel splittings the integrator offers (pyFAI's names).
SPLITTINGS = ("bbox", "no")
_SPLITTING_CACHE: OrderedDict[tuple, PixelSplitting] = OrderedDict()
SPLITTING_CACHE_SIZE = 8


def pixel_splitting(poni: Poni, npt: int, npt_azim: int | None, unit: str,
                    radial_range: tuple[float, float] | None, mask: np.ndarray, split: str = "bbox") -> PixelSplitting:
    """pyFAI's own CSR matrix for these bins, masked pixels removed, as a (cached)
    :class:`PixelSplitting`. ``mask``: True = bad pixel; ``split``: pyFAI's pixel
    splitting, ``"bbox"`` or ``"no"``."""
    if split not in SPLITTINGS:
        raise GeometryError(f"unknown pixel splitting {split!r}; use one of {SPLITTINGS}")
    key = (poni, npt, npt_azim, unit, split, None if radial_range is None else tuple(map(float, radial_range)),
           hashlib.sha1(np.packbits(mask).tobytes()).hexdigest())
    if key in _SPLITTING_CACHE:
        _SPLITTING_CACHE.move_to_end(key)
        return _SPLITTING_CACHE[key]
    ai = poni.integrator()
    shape = mask.shape
    dummy = np.zeros(shape, np.float32)
    kw = dict(unit=unit, method=(split, "csr", "cython"), mask=mask, radial_range=radial_range,
              correctSolidAngle=False)
    if npt_azim:
        res = ai.integrate2d_ng(dummy, npt, npt_azim, **kw)
        azimuthal = np.asarray(res.azimuthal, np.float64)
    else:
        res = ai.integrate1d_ng(dummy, npt, **kw)
        azimuthal = None
    data, indices, indptr = (np.asarray(a) for a in ai.engines[res.method].engine.lut)
    n_pixels = int(np.prod(shape))
    matrix = scipy.sparse.csr_matrix((data.astype(np.float32), indices.astype(np.int32), indptr.astype(np.int32)),
                                     shape=(len(indptr) - 1, n_pixels))
    matrix = (matrix @ scipy.sparse.diags((~mask.ravel()).astype(np.float32))).tocsc()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    if matrix.nnz == 0:
        raise GeometryError(f"no valid pixel of detector {poni.detector!r} falls into the {npt} {unit} bins "
                            f"of radial range {radial_range}")
    if not np.isfinite(matrix.data).all():
        raise GeometryError("pyFAI's pixel-splitting matrix has non-finite weights")
    colptr = matrix.indptr.astype(np.int32 if matrix.nnz < np.iinfo(np.int32).max else np.int64)
    n_bins = matrix.shape[0]
    split = PixelSplitting(colptr, matrix.indices.astype(np.uint16 if n_bins <= np.iinfo(np.uint16).max else np.int32),
                           matrix.data.astype(np.float32), n_bins, np.asarray(res.radial, np.float64), azimuthal,
                           balanced_ranges(colptr, numba.get_num_threads()))
    _SPLITTING_CACHE[key] = split
    while len(_SPLITTING_CACHE) > SPLITTING_CACHE_SIZE:
        _SPLITTING_CACHE.popitem(last=False)
    return split
