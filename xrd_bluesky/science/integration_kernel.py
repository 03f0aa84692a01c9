"""The per-frame hot loop of integration: one fused, multi-threaded pass over the frame.

pyFAI's CSR engine recomputes signal, variance and normalization of every pixel for
every frame. For a fixed geometry, mask, gain map, polarization and dark, everything
but the frame itself is constant, so the per-frame work reduces to two weighted sums
per bin — ``sum c * raw`` and ``sum c**2 * max(raw, 1)`` (the Poisson variance as
pyFAI's CSR engine computes it: of the raw counts; the dark is an average, its own
variance is neglected).

The pixel-splitting matrix is traversed pixel by pixel (compressed sparse *column*
order): the frame, the column pointers, the bin numbers and the weights are all read
sequentially, once, and each thread adds into its own small per-bin accumulator (a few
tens of kB, cache-resident); no gathers. Pixels of *this* frame that are invalid
(negative, non-finite, saturated) are left out of the sums; what they would have
contributed to the precomputed constant sums (normalization, dark, count) is
accumulated separately so the caller can take it off.
"""

from __future__ import annotations

import numba
import numpy as np

#: Columns of the per-thread accumulators.
SIGNAL, VARIANCE = 0, 1
LOST_NORM, LOST_DARK, LOST_COUNT = 0, 1, 2


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def fused_bin_sums(colptr: np.ndarray, rows: np.ndarray, coef: np.ndarray, bounds: np.ndarray,
                   frame: np.ndarray, max_count: float, norm: np.ndarray, dark: np.ndarray,
                   acc: np.ndarray, lost: np.ndarray) -> None:
    """Accumulate the frame's weighted sums per bin, one pixel range per thread.

    Parameters
    ----------
    colptr, rows, coef : ndarray
        The pixel-splitting matrix (bins x pixels) in CSC form: int32 (or int64) column pointers,
        bin numbers (uint16 or int32), float32 weights.
    bounds : ndarray
        Pixel-range boundaries, one range per thread (balanced by entries).
    frame : ndarray
        Raw counts, flattened (any real dtype). A pixel is valid when
        ``0 <= value < max_count``; NaN fails both comparisons.
    max_count : float
        First invalid (saturated) count; ``inf`` for none.
    norm, dark : ndarray
        Per-pixel normalization and dark (flattened; read only for invalid pixels).
    acc : ndarray
        ``(n_ranges, n_bins, 2)`` float64, overwritten with ``sum c*raw`` and
        ``sum c**2*max(raw, 1)`` over valid pixels.
    lost : ndarray
        ``(n_ranges, n_bins, 3)`` float64, overwritten with, over the frame's invalid
        pixels, ``sum c*norm``, ``sum c*dark`` and ``sum c``.
    """
    for r in numba.prange(len(bounds) - 1):
        a = acc[r]
        lo = lost[r]
        a[:] = 0.0
        lo[:] = 0.0
        for p in range(bounds[r], bounds[r + 1]):
            x = np.float64(frame[p])
            if x >= 0.0 and x < max_count:
                v = max(x, 1.0)
                for k in range(colptr[p], colptr[p + 1]):
                    b = rows[k]
                    c = np.float64(coef[k])
                    a[b, SIGNAL] += c * x
                    a[b, VARIANCE] += c * c * v
            else:
                for k in range(colptr[p], colptr[p + 1]):
                    b = rows[k]
                    c = np.float64(coef[k])
                    lo[b, LOST_NORM] += c * norm[p]
                    lo[b, LOST_DARK] += c * dark[p]
                    lo[b, LOST_COUNT] += c


def balanced_ranges(colptr: np.ndarray, n_ranges: int) -> np.ndarray:
    """Pixel boundaries splitting a CSC matrix into ``n_ranges`` runs of about equal
    numbers of entries (int64, starts with 0, ends with the number of pixels)."""
    targets = np.linspace(0, colptr[-1], n_ranges + 1)
    bounds = np.searchsorted(colptr, targets, side="left")
    bounds[0], bounds[-1] = 0, len(colptr) - 1
    return bounds.astype(np.int64)


@numba.njit(parallel=True, cache=True, nogil=True)
def sum_frames(frames: np.ndarray, max_count: float, out: np.ndarray) -> int:
    """Sum a stack of frames pixel by pixel into ``out`` (one pass, multi-threaded);
    a pixel negative, non-finite or at/above ``max_count`` in any frame becomes -1
    (invalid for :func:`fused_bin_sums`).

    Parameters
    ----------
    frames : ndarray
        ``(n, rows, columns)`` raw counts.
    max_count : float
        First saturated count; ``inf`` for none.
    out : ndarray
        ``(rows, columns)`` sums (counts), overwritten.

    Returns
    -------
    int
        How many pixel values of the stack are at or above ``max_count`` (saturated).
    """
    n, rows, cols = frames.shape
    saturated = 0
    for r in numba.prange(rows):
        for c in range(cols):
            total = 0.0
            bad = False
            for i in range(n):
                x = np.float64(frames[i, r, c])
                if not (x >= 0.0 and x < max_count):
                    bad = True
                    if x >= max_count:
                        saturated += 1
                total += x
            out[r, c] = -1.0 if bad else total
    return saturated
