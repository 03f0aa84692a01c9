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

The pixel-splitting matrix comes from pyFAI's own CSR engine, stored as blocks of
consecutive bins (:mod:`~xrd_bluesky.science.reduction.integration_kernel`; a cake's bins are
numbered azimuth-major for it, so that a pixel's bins are consecutive); constant per-bin
sums (normalization, dark, pixel count) are computed once, leaving one fused pass per
frame (:func:`~xrd_bluesky.science.reduction.integration_kernel.block_sums`).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse

from ...compat.pyfai import csr_matrix_parts
from ...errors import GeometryError, InvalidFrameError
from ..geometry import Poni
from .integration import (
    IntegrationResult,
    check_binning,
    check_frame_shape,
    check_max_count,
    check_radial_range,
    describe_invalid,
    radial_bounds,
)
from .integration_kernel import (
    BLOCK,
    balanced_ranges,
    block_sums,
    pixel_sums,
    to_blocks,
)
from .shared_preparations import KeptPreparations, obtain, obtain_together

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

    def __add__(self, other: BinSums) -> BinSums:
        if (self.unit != other.unit or self.signal.shape != other.signal.shape
                or not np.allclose(self.radial, other.radial, rtol=1e-9, atol=0)):
            raise ValueError("cannot add integrations with different bins")
        return BinSums(self.radial, self.signal + other.signal, self.variance + other.variance,
                       self.normalization + other.normalization, self.count + other.count,
                       self.unit, self.azimuthal)

    def normalized_by(self, factor: float) -> BinSums:
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

    What is prepared (the pixel-splitting matrix, the per-pixel normalization and dark,
    the constant per-bin sums) lives in a cache bounded in bytes
    (:data:`SPLITTING_CACHE_BYTES`), not in the integrator: however many integrators
    (detector positions) are alive, their memory is that bound plus a few per-bin arrays
    each. An integrator whose preparation was evicted prepares it again on its next
    frame, from the ``mask``, ``gain`` and ``dark`` arrays it was given (kept by
    reference, not copied; changing them afterwards is an error).

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
        (:mod:`~xrd_bluesky.science.reduction.multi_geometry`) passes a common range so that
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
    prepare : bool
        Prepare now (default); False leaves it to :meth:`prepare`, to
        :func:`prepare_together` or to the first use.

    Raises
    ------
    GeometryError
        Unusable bins (``npt``, ``npt_azim``, ``unit``, ``split``), a radial range that
        is empty or outside the detector's valid pixels (when prepared), a detector
        without a shape, a ``max_count`` that is not a positive number, or every pixel
        masked; all checked before the pixel-splitting matrix is built.
    ShapeMismatchError
        ``mask``, ``gain`` or ``dark`` does not fit the detector.
    """

    def __init__(self, poni: Poni, *, npt: int = 2000, unit: str = "q_nm^-1",
                 radial_range: tuple[float, float] | None = None, npt_azim: int | None = None,
                 mask: np.ndarray | None = None, gain: np.ndarray | None = None,
                 dark: np.ndarray | None = None, polarization_factor: float | None = 0.99,
                 max_count: float | None = None, split: str = "bbox", prepare: bool = True):
        check_binning(npt, unit, npt_azim)
        if split not in SPLITTINGS:
            raise GeometryError(f"unknown pixel splitting {split!r}; use one of {SPLITTINGS}")
        check_max_count(max_count)
        if poni.detector_model().shape is None:
            raise GeometryError(f"detector {poni.detector!r} (config {poni.detector_config!r}) has no shape")
        self.poni, self.unit, self.npt, self.npt_azim = poni, unit, npt, npt_azim
        self.max_count = np.inf if max_count is None else float(max_count)
        self.shape = tuple(poni.detector_model().shape)
        for name, array in (("mask", mask), ("gain", gain), ("dark", dark)):
            if array is not None:
                check_frame_shape(array, poni, name)
        self._mask, self._gain, self._dark = mask, gain, dark
        self._polarization_factor, self._radial_range, self._split = polarization_factor, radial_range, split
        valid = self._valid()
        if not valid.any():
            raise GeometryError(f"every pixel of detector {poni.detector!r} is masked (mask, gain, dark): "
                                "nothing to integrate")
        self._key = self._cache_key(valid)
        self._bins: tuple[int, np.ndarray, np.ndarray | None] | None = None
        self._moments: tuple[np.ndarray, np.ndarray] | None = None
        if prepare:
            self.prepare()

    @property
    def n_bins(self) -> int:
        """Number of bins (radial x azimuthal for a cake)."""
        return self._bins_prepared()[0]

    @property
    def radial(self) -> np.ndarray:
        """Radial bin centres (in :attr:`unit`)."""
        return self._bins_prepared()[1]

    @property
    def azimuthal(self) -> np.ndarray | None:
        """Azimuthal bin centres (deg) of a cake, else None."""
        return self._bins_prepared()[2]

    @property
    def azimuthal_moments(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per cake bin (azimuth, radial), the normalization-weighted means of cos(2 chi)
        and sin(2 chi) over the pixels it holds (NaN where none): where a bin's pixels
        really are in azimuth when the detector's edge or a gap cuts its sector. None in 1D."""
        if self.npt_azim and self._moments is None:
            self._moments = self._azimuthal_moments(self._prepared())
        return self._moments

    @property
    def prepared(self) -> bool:
        """Whether the integrator has its bins (:meth:`prepare` was called)."""
        return self._bins is not None

    def prepare(self) -> None:
        """Prepare what every frame needs (see the class), waiting for another process
        that builds the same pixel-splitting matrix (see
        :mod:`~xrd_bluesky.science.reduction.shared_preparations`).

        Raises
        ------
        GeometryError
            The radial range lies outside what the valid pixels cover.
        """
        self._adopt(self._prepared())

    def _try_prepare(self) -> bool:
        """Prepare unless another process builds the splitting matrix; whether prepared."""
        prepared = self._prepared(wait=False)
        if prepared is not None:
            self._adopt(prepared)
        return prepared is not None

    def _bins_prepared(self) -> tuple[int, np.ndarray, np.ndarray | None]:
        if self._bins is None:
            self.prepare()
        return self._bins

    def _adopt(self, prepared: PreparedPosition) -> None:
        split = prepared.splitting
        self._bins = (split.n_bins, split.radial, split.azimuthal)

    def _valid(self) -> np.ndarray:
        """Pixels to integrate (True = good): not in the detector's gaps, the static mask,
        a non-finite dark or a non-positive or non-finite gain."""
        det_mask = self.poni.detector_model().mask
        valid = np.ones(self.shape, bool) if det_mask is None else ~det_mask.astype(bool)
        if self._mask is not None:
            valid &= ~np.asarray(self._mask, bool)
        if self._dark is not None:
            valid &= np.isfinite(self._dark)
        if self._gain is not None:
            with np.errstate(invalid="ignore"):
                valid &= np.isfinite(self._gain) & (np.asarray(self._gain, np.float64) > 0)
        return valid

    def _cache_key(self, valid: np.ndarray) -> tuple[tuple, tuple]:
        """What the preparation depends on: the key of its splitting matrix (geometry,
        bins, valid pixels), then its own (that key with gain, dark and polarization)."""
        radial_range = None if self._radial_range is None else radial_bounds(self._radial_range, self.unit)
        splitting = (PixelSplitting, self.poni, self.npt, self.npt_azim, self.unit, self._split, radial_range,
                     _digest(np.packbits(valid)))
        return splitting, (PreparedPosition, *splitting[1:], _digest(self._gain), _digest(self._dark),
                           self._polarization_factor)

    def _cached_preparation(self) -> PreparedPosition | None:
        """The cached preparation (its splitting marked as used too), or None."""
        prepared = _cached(self._key[1])
        if prepared is not None:
            _cached(self._key[0])
        return prepared

    def _prepared(self, wait: bool = True) -> PreparedPosition | None:
        """The cached preparation, prepared (again, if it was evicted) when missing;
        None when not ``wait`` and another process builds its splitting matrix."""
        prepared = self._cached_preparation()
        if prepared is not None:
            return prepared
        valid = self._valid()
        if self._cache_key(valid) != self._key:
            raise GeometryError("the mask, gain or dark array given to this integrator was changed since it was "
                                "made: make a new integrator")
        splitting = self._splitting(valid, wait)
        return None if splitting is None else self._prepare(valid, splitting)

    def _splitting(self, valid: np.ndarray, wait: bool) -> PixelSplitting | None:
        """The splitting matrix: cached in this process, else loaded from the shared
        store, else built here (and saved there) unless another process is building it:
        then waited for, or None when not ``wait``
        (:func:`~xrd_bluesky.science.reduction.shared_preparations.obtain`)."""
        key = self._key[0]
        splitting = _cached(key)
        if splitting is None:
            splitting = obtain((SHARED_KIND, *key[1:]), lambda: self._build_splitting(valid), PixelSplitting.arrays,
                               PixelSplitting.from_arrays, wait=wait)
            if splitting is not None:
                _remember(key, splitting)
        return splitting

    def _try_splitting(self) -> bool:
        """Obtain the splitting matrix unless another process builds it; whether obtained."""
        return self._splitting(self._valid(), wait=False) is not None

    def _try_normalization(self) -> bool:
        """Obtain the per-pixel normalization unless another process computes it; whether
        obtained."""
        return pixel_normalization(self.poni, self._polarization_factor, wait=False) is not None

    def _build_splitting(self, valid: np.ndarray) -> PixelSplitting:
        """pyFAI's splitting matrix for these bins, after checking the radial range
        (:class:`GeometryError`); a cached or shared matrix of the same key passed it."""
        check_radial_range(self.poni, self.unit, self._radial_range, valid)
        return pixel_splitting(self.poni, self.npt, self.npt_azim, self.unit, self._radial_range, ~valid, self._split)

    def _prepare(self, valid: np.ndarray, splitting: PixelSplitting) -> PreparedPosition:
        """Build (and cache) the per-pixel corrections and constant sums with
        ``splitting``: positions of the same geometry and valid pixels share it whatever
        their dark, gain or polarization (runs of one calibration, each with a dark of
        its own)."""
        norm, dark = self._pixel_corrections(valid)
        static = splitting.sums(norm, _zero_if_none(dark, norm.shape))
        prepared = PreparedPosition(splitting, norm, dark, static)
        if _cached(self._key[0]) is splitting:  # a splitting too large to cache leaves its preparation out too
            _remember(self._key[1], prepared)
        return prepared

    def _pixel_corrections(self, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The per-pixel normalization (gain x polarization x solid angle) and dark of
        the ``valid`` pixels, flattened and 0 where masked: computed once for the
        integrators of one position and frames (q, 2theta, cake), which share them
        while any of their preparations holds them (:data:`_CORRECTIONS`)."""
        key = (self.poni, self._key[0][-1], *self._key[1][-3:])  # geometry, valid pixels, gain, dark, polarization
        with _CACHE_LOCK:
            norm_ref, dark_ref = _CORRECTIONS.get(key, (lambda: None, None))
            norm, dark = norm_ref(), dark_ref and dark_ref()
            if norm is not None and (dark_ref is None or dark is not None):
                return norm, dark
        norm = pixel_normalization(self.poni, self._polarization_factor)
        if self._gain is not None:
            norm = norm * np.where(valid, np.asarray(self._gain, np.float64), 0.0)
        norm = np.where(valid, norm, 0.0).ravel()
        dark = None
        if self._dark is not None:  # kept in the smallest float dtype that holds the given dark exactly
            dark = np.where(valid, self._dark, 0).astype(np.result_type(np.asarray(self._dark).dtype, np.float32))
            dark = dark.ravel()
        with _CACHE_LOCK:
            _CORRECTIONS[key] = weakref.ref(norm), None if dark is None else weakref.ref(dark)
            while len(_CORRECTIONS) > KEPT_CORRECTIONS:
                _CORRECTIONS.popitem(last=False)
        return norm, dark

    def _azimuthal_moments(self, prepared: PreparedPosition) -> tuple[np.ndarray, np.ndarray]:
        """:attr:`azimuthal_moments` computed."""
        two_chi = 2 * self.poni.integrator().center_array(self.shape, unit="chi_rad").ravel()
        sums = prepared.splitting.sums(prepared.norm * np.cos(two_chi), prepared.norm * np.sin(two_chi))
        with np.errstate(invalid="ignore", divide="ignore"):
            return tuple(self._arrange(sums[:, k] / prepared.static[:, 0]) for k in (0, 1))

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
        GeometryError
            The preparation was evicted from the cache and the ``mask``, ``gain`` or
            ``dark`` array it was made from has changed since.
        """
        check_frame_shape(frame, self.poni, source)
        frame = np.asarray(frame)
        flat = np.ascontiguousarray(frame if frame.dtype in KERNEL_DTYPES else frame.astype(np.float64)).reshape(-1)
        prepared = self._prepared()
        split = prepared.splitting
        n_ranges = len(split.bounds) - 1
        acc, lost = np.empty((n_ranges, 2 * (self.n_bins + BLOCK))), np.empty((self.n_bins + BLOCK, 3))
        bad, n_bad = np.empty(flat.size, np.int32), np.empty(n_ranges, np.int64)
        block_sums(*split.blocks, split.bounds, split.extra_bounds, flat, self.max_count, acc, bad, n_bad)
        pixel_sums(bad, n_bad, split.bounds, *split.blocks, prepared.norm, _zero_if_none(prepared.dark, flat.shape),
                   lost)
        raw, raw_var = acc.sum(axis=0).reshape(-1, 2)[:self.n_bins].T
        lost_norm, lost_dark, lost_count = lost[:self.n_bins].T
        norm, dark, count = prepared.static.T
        if not np.any(count - lost_count > 1e-9 * count):  # all lost, up to rounding
            max_count = None if np.isinf(self.max_count) else self.max_count
            raise InvalidFrameError(f"{source}: no valid pixel inside the {self.unit} bins, nothing to integrate "
                                    f"({describe_invalid(frame, max_count)})")
        return BinSums(self.radial, self._arrange(raw - (dark - lost_dark)), self._arrange(raw_var),
                       self._arrange(norm - lost_norm), self._arrange(count - lost_count),
                       self.unit, self.azimuthal)

    def _arrange(self, per_bin: np.ndarray) -> np.ndarray:
        """A cake's bins are numbered azimuth-major (:func:`pixel_splitting`): (azimuth, radial)."""
        return per_bin.reshape(self.npt_azim, self.npt) if self.npt_azim else per_bin

    def integrate(self, frame: np.ndarray) -> IntegrationResult:
        """Corrected intensity (counts/sr) and its Poisson sigma of one frame."""
        return self.sums(frame).result()


@dataclass(frozen=True)
class PixelSplitting:
    """pyFAI's pixel-splitting matrix (bins x pixels), without masked pixels, as the
    kernel's blocks (:func:`~xrd_bluesky.science.reduction.integration_kernel.to_blocks`; a cake's
    bins azimuth-major), with the bin centres (radial in the unit; azimuth in deg or
    None) and the per-thread pixel and secondary-block ranges of the kernel."""

    first: np.ndarray
    coef: np.ndarray
    extra_pixel: np.ndarray
    extra_first: np.ndarray
    extra_coef: np.ndarray
    n_bins: int
    radial: np.ndarray
    azimuthal: np.ndarray | None
    bounds: np.ndarray
    extra_bounds: np.ndarray

    @property
    def blocks(self) -> tuple[np.ndarray, ...]:
        """The kernel's block arrays: first, coef, extra_pixel, extra_first, extra_coef."""
        return self.first, self.coef, self.extra_pixel, self.extra_first, self.extra_coef

    def sums(self, u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Per bin, ``sum c*u``, ``sum c*w`` and ``sum c`` over all pixels (``(n_bins, 3)``
        float64; ``u`` and ``w`` per pixel, flattened)."""
        n_pixels = len(self.first)
        out = np.empty((self.n_bins + BLOCK, 3))
        pixel_sums(np.arange(n_pixels, dtype=np.int32), np.array([n_pixels]), np.array([0, n_pixels]), *self.blocks,
                   u, w, out)
        return out[:self.n_bins]

    def matrix(self) -> scipy.sparse.csr_matrix:
        """The matrix for scipy products (float32 weights, built from the blocks)."""
        n_pixels = len(self.first)
        pixels = np.concatenate([np.repeat(np.arange(n_pixels), BLOCK), np.repeat(self.extra_pixel, BLOCK)])
        bins = np.concatenate([(self.first.astype(np.int64)[:, None] + np.arange(BLOCK)).ravel(),
                               (self.extra_first.astype(np.int64)[:, None] + np.arange(BLOCK)).ravel()])
        weights = np.concatenate([self.coef.ravel(), self.extra_coef.ravel()])
        keep = weights != 0  # padding (and nothing else: the matrix had its zeros eliminated)
        return scipy.sparse.csr_matrix((weights[keep], (bins[keep], pixels[keep])), shape=(self.n_bins, n_pixels))

    def arrays(self) -> dict[str, np.ndarray]:
        """Its arrays by name, for :meth:`from_arrays` (not the per-thread ranges, which
        depend on the threads of the process using it)."""
        out = {"first": self.first, "coef": self.coef, "extra_pixel": self.extra_pixel,
               "extra_first": self.extra_first, "extra_coef": self.extra_coef, "n_bins": np.array(self.n_bins),
               "radial": self.radial}
        return out if self.azimuthal is None else {**out, "azimuthal": self.azimuthal}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PixelSplitting:
        """The splitting of :meth:`arrays`, with ranges for this process's threads.

        Raises
        ------
        ValueError
            An array is missing or their shapes disagree.
        """
        try:
            first, coef, extra_pixel = arrays["first"], arrays["coef"], arrays["extra_pixel"]
            extra_first, extra_coef, n_bins = arrays["extra_first"], arrays["extra_coef"], int(arrays["n_bins"])
            radial, azimuthal = arrays["radial"], arrays.get("azimuthal")
        except KeyError as exc:
            raise ValueError(f"no array {exc}") from None
        if (coef.shape != (len(first), BLOCK) or extra_coef.shape != (len(extra_pixel), BLOCK)
                or len(extra_first) != len(extra_pixel) or radial.ndim != 1
                or n_bins != len(radial) * (1 if azimuthal is None else len(azimuthal))):
            raise ValueError("the shapes of its arrays disagree")
        ranges = balanced_ranges(extra_pixel, len(first), numba.get_num_threads())
        return cls(first, coef, extra_pixel, extra_first, extra_coef, n_bins, radial, azimuthal, *ranges)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (bytes)."""
        arrays = (self.first, self.coef, self.extra_pixel, self.extra_first, self.extra_coef, self.radial,
                  self.bounds, self.extra_bounds, self.azimuthal)
        return sum(a.nbytes for a in arrays if a is not None)


@dataclass(frozen=True)
class PreparedPosition:
    """Everything :meth:`CorrectedIntegrator.sums` needs besides the frame: the splitting,
    the per-pixel normalization (float64, sr; 0 where masked) and dark (counts; None
    when there is none), and the constant per-bin sums of normalization, dark and
    pixel count (``(n_bins, 3)`` float64)."""

    splitting: PixelSplitting
    norm: np.ndarray
    dark: np.ndarray | None
    static: np.ndarray

    @property
    def nbytes(self) -> int:
        """Memory held by its arrays (bytes), not by the splitting it shares; the
        per-pixel arrays the integrators of one position share are counted in each (a
        bound, not an estimate)."""
        dark = 0 if self.dark is None else self.dark.nbytes
        return self.norm.nbytes + dark + self.static.nbytes


def _zero_if_none(per_pixel: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``per_pixel``, or zeros of ``shape`` that take no memory when it is None."""
    return np.broadcast_to(0.0, shape) if per_pixel is None else per_pixel


#: Pixel splittings the integrator offers (pyFAI's names).
SPLITTINGS = ("bbox", "no")
#: Bound (bytes) of the cache of splitting matrices (:class:`PixelSplitting`) and of
#: the prepared positions using them (:class:`PreparedPosition`), least recently used
#: evicted first; a splitting evicted takes the preparations using it along. With a
#: dark, 2000 bins and bbox splitting, a Pilatus 300K-W position at 0.9 m takes about
#: 7.2 MiB, so the default holds a 50-position 2theta-arm scan (360 MiB) with room to
#: spare; a Pilatus 2M position at 0.3 m takes about 71 MiB, so it holds 7 of those.
#: An entry larger than the bound is used but not cached.
SPLITTING_CACHE_BYTES = 512 * 2**20
_SPLITTING_CACHE: OrderedDict[tuple, PixelSplitting | PreparedPosition] = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: Weak references to the per-pixel corrections of the positions prepared last
#: (:meth:`CorrectedIntegrator._pixel_corrections`): the integrators of one position
#: share them while the preparations using them hold them, and never keep them alive.
KEPT_CORRECTIONS = 8
_CORRECTIONS: OrderedDict[tuple, tuple[weakref.ref, weakref.ref | None]] = OrderedDict()
#: What the shared store calls a splitting matrix (the first element of its key there).
SHARED_KIND = "pixel splitting"


def prepare_together(integrators: Iterable[CorrectedIntegrator]) -> None:
    """Prepare ``integrators`` (:meth:`CorrectedIntegrator.prepare`), building the
    matrices no other process is building first: processes sharing their preparations
    (:mod:`~xrd_bluesky.science.reduction.shared_preparations`) that need the same
    matrices at once each build some and load the others', instead of one building
    while the others wait.

    Raises
    ------
    GeometryError
        As :meth:`CorrectedIntegrator.prepare`.
    """
    obtain_together(integrator._try_prepare for integrator in integrators if not integrator.prepared)


def prepare_ahead(integrators: Iterable[CorrectedIntegrator]) -> None:
    """Obtain the pixel-splitting matrices and per-pixel normalizations of
    ``integrators`` ahead of their frames (the rest of their preparation is left to
    them), dividing the work between the processes that share their preparations as
    :func:`prepare_together` does.

    Raises
    ------
    GeometryError
        As :meth:`CorrectedIntegrator.prepare`.
    """
    integrators = list(integrators)
    one_per_normalization = {(i.poni, i._polarization_factor): i for i in integrators}.values()
    obtain_together([i._try_splitting for i in integrators] + [i._try_normalization for i in one_per_normalization])


def pixel_normalization(poni: Poni, polarization_factor: float | None, *, wait: bool = True) -> np.ndarray | None:
    """Per pixel, the absolute solid angle (sr) times pyFAI's polarization factor
    (none if ``polarization_factor`` is None) at ``poni``: float64, read-only, the
    detector's shape. The integrators of one position compute it once between them
    (they share their corrections), and processes sharing their preparations once
    between them (:data:`_NORMALIZATIONS`); None when not ``wait`` and another process
    computes it."""
    def compute() -> np.ndarray:
        ai = poni.integrator()
        shape = tuple(poni.detector_model().shape)
        norm = ai.solidAngleArray(shape, absolute=True).astype(np.float64)
        return norm if polarization_factor is None else norm * ai.polarization(shape, factor=polarization_factor)

    norm = _NORMALIZATIONS.get((poni, polarization_factor), compute, wait=wait)
    if norm is not None:
        norm.flags.writeable = False
    return norm


def _normalization(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The normalization saved as ``arrays``; ValueError if it is not one."""
    norm = arrays.get("norm")
    if norm is None or norm.dtype != np.float64 or norm.ndim != 2:
        raise ValueError("its normalization is not an image of float64")
    return norm


#: The per-pixel normalizations, shared with the processes sharing their preparations;
#: none kept in memory (a Pilatus 2M's takes 19 MB): the integrators of a position share
#: the corrections computed from it.
_NORMALIZATIONS: KeptPreparations[np.ndarray] = KeptPreparations("pixel normalization", 0,
                                                                 lambda norm: {"norm": norm}, _normalization)


def splitting_cache_bytes() -> int:
    """Memory (bytes) of the prepared positions the cache holds now."""
    with _CACHE_LOCK:
        return sum(p.nbytes for p in _SPLITTING_CACHE.values())


def clear_splitting_cache() -> None:
    """Drop every cached preparation (integrators prepare theirs again when next used)."""
    with _CACHE_LOCK:
        _SPLITTING_CACHE.clear()
        _CORRECTIONS.clear()


def _cached(key: tuple):
    """The cached entry of ``key`` (marked as most recently used), or None."""
    with _CACHE_LOCK:
        entry = _SPLITTING_CACHE.get(key)
        if entry is not None:
            _SPLITTING_CACHE.move_to_end(key)
        return entry


def _remember(key: tuple, entry: PixelSplitting | PreparedPosition) -> None:
    """Cache ``entry``, evicting the least recently used until the cache fits
    :data:`SPLITTING_CACHE_BYTES` (read at each call); a splitting evicted takes the
    preparations using it along, so that what the cache holds is what it counts."""
    with _CACHE_LOCK:
        if entry.nbytes > SPLITTING_CACHE_BYTES:
            return
        _SPLITTING_CACHE[key] = entry
        total = sum(p.nbytes for p in _SPLITTING_CACHE.values())
        while total > SPLITTING_CACHE_BYTES:
            _, evicted = _SPLITTING_CACHE.popitem(last=False)
            total -= evicted.nbytes
            if isinstance(evicted, PixelSplitting):
                for other in [k for k, p in _SPLITTING_CACHE.items()
                              if isinstance(p, PreparedPosition) and p.splitting is evicted]:
                    total -= _SPLITTING_CACHE.pop(other).nbytes


def _digest(array: np.ndarray | None) -> str | None:
    """A digest of an array's dtype, shape and values (None for None)."""
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    h = hashlib.sha1(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.view(np.uint8).reshape(-1))
    return h.hexdigest()


def pixel_splitting(poni: Poni, npt: int, npt_azim: int | None, unit: str,
                    radial_range: tuple[float, float] | None, mask: np.ndarray, split: str = "bbox") -> PixelSplitting:
    """pyFAI's own CSR matrix for these bins, masked pixels removed, as a
    :class:`PixelSplitting` (not cached: :class:`CorrectedIntegrator` caches it with
    the corrections). ``mask``: True = bad pixel; ``split``: pyFAI's pixel splitting,
    ``"bbox"`` or ``"no"``. A cake's bins are renumbered from pyFAI's radial-major
    order to azimuth-major (bin ``azimuth * npt + radial``)."""
    if split not in SPLITTINGS:
        raise GeometryError(f"unknown pixel splitting {split!r}; use one of {SPLITTINGS}")
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
    data, indices, indptr = csr_matrix_parts(ai, res.method)
    n_pixels = int(np.prod(shape))
    matrix = scipy.sparse.csr_matrix((data.astype(np.float32), indices.astype(np.int32), indptr.astype(np.int32)),
                                     shape=(len(indptr) - 1, n_pixels))
    matrix.data[mask.ravel()[matrix.indices]] = 0  # a masked pixel's weights (its column) removed
    matrix = matrix.tocsc()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    if matrix.nnz == 0:
        raise GeometryError(f"no valid pixel of detector {poni.detector!r} falls into the {npt} {unit} bins "
                            f"of radial range {radial_range}")
    if not np.isfinite(matrix.data).all():
        raise GeometryError("pyFAI's pixel-splitting matrix has non-finite weights")
    if npt_azim:
        rows = matrix.indices.astype(np.int64)
        rows = (rows % npt_azim) * npt + rows // npt_azim
        matrix = scipy.sparse.csc_matrix((matrix.data, rows, matrix.indptr), shape=matrix.shape)
        matrix.sort_indices()
    blocks = to_blocks(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), matrix.data, matrix.shape[0])
    ranges = balanced_ranges(blocks[2], n_pixels, numba.get_num_threads())
    return PixelSplitting(*blocks, matrix.shape[0], np.asarray(res.radial, np.float64), azimuthal, *ranges)
