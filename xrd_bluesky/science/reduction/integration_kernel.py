"""The per-frame hot loop of integration: one fused, multi-threaded pass over the frame.

pyFAI's CSR engine recomputes signal, variance and normalization of every pixel for
every frame. For a fixed geometry, mask, gain map, polarization and dark, everything
but the frame itself is constant, so the per-frame work reduces to two weighted sums
per bin — ``sum c * raw`` and ``sum c**2 * max(raw, 1)`` (the Poisson variance as
pyFAI's CSR engine computes it: of the raw counts; the dark is an average, its own
variance is neglected).

The pixel-splitting matrix (bins x pixels) is stored as **blocks**: a block is a first
bin and the weights of the :data:`BLOCK` consecutive bins from it (zero where the pixel
does not reach). With bounding-box splitting a pixel's bins are consecutive (in a cake,
consecutive in q within one azimuth sector), so one *primary* block per pixel, stored in
pixel order, holds nearly every weight; the few pixels whose bins do not fit (a cake's
sector boundaries, wide pixels) have *secondary* blocks, listed by pixel. The pass reads
the frame (in its own dtype), the first bins and the weights sequentially, once, with
no per-pixel loop bound to mispredict, and each thread adds into its own small per-bin
accumulator (cache-resident for 1D); no gathers. Pixels of *this* frame that are
invalid (negative, non-finite, saturated) are left out and listed, so that what they
would have contributed to the precomputed constant sums (normalization, dark, count)
can be taken off (:func:`pixel_sums`; few pixels, one serial pass over them).
"""

from __future__ import annotations

import numba
import numpy as np

#: Consecutive bins of one block (the inner loop is unrolled for it).
BLOCK = 4
#: Fast-math flags of the kernel: contraction and reassociation of the sums, but not the
#: no-NaN/no-inf assumptions (the validity test must see NaN frames and an infinite
#: ``max_count``).
FASTMATH = {"contract", "reassoc", "nsz", "arcp"}


@numba.njit(inline="always")
def _add_block(acc: np.ndarray, first: int, c: np.ndarray, x: float, v: float) -> None:
    """Add ``c * x`` and ``c**2 * v`` of one block at bins ``first..first+BLOCK-1``
    (``acc`` flat: signal and variance interleaved); weights loaded before the stores."""
    c0, c1, c2, c3 = np.float64(c[0]), np.float64(c[1]), np.float64(c[2]), np.float64(c[3])
    i = 2 * first
    acc[i] += c0 * x
    acc[i + 1] += c0 * c0 * v
    acc[i + 2] += c1 * x
    acc[i + 3] += c1 * c1 * v
    acc[i + 4] += c2 * x
    acc[i + 5] += c2 * c2 * v
    acc[i + 6] += c3 * x
    acc[i + 7] += c3 * c3 * v


@numba.njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def block_sums(first: np.ndarray, coef: np.ndarray, extra_pixel: np.ndarray, extra_first: np.ndarray,
               extra_coef: np.ndarray, bounds: np.ndarray, extra_bounds: np.ndarray, frame: np.ndarray,
               max_count: float, acc: np.ndarray, bad: np.ndarray, n_bad: np.ndarray) -> None:
    """Accumulate the frame's weighted sums per bin, one pixel range per thread.

    Parameters
    ----------
    first, coef : ndarray
        Primary blocks, one per pixel: first bin (uint16 or int32) and ``(pixels, BLOCK)``
        float32 weights.
    extra_pixel, extra_first, extra_coef : ndarray
        Secondary blocks: pixel (int32, ascending), first bin and ``(blocks, BLOCK)`` weights.
    bounds, extra_bounds : ndarray
        Per thread, the pixel range (``bounds[r]:bounds[r + 1]``) and the matching range
        of secondary blocks (int64).
    frame : ndarray
        Raw counts, flattened (any real dtype). A pixel is valid when
        ``0 <= value < max_count``; NaN fails both comparisons.
    max_count : float
        First invalid (saturated) count; ``inf`` for none.
    acc : ndarray
        ``(n_ranges, 2 * (n_bins + BLOCK))`` float64, overwritten with ``sum c*raw`` and
        ``sum c**2*max(raw, 1)`` over valid pixels, interleaved per bin.
    bad, n_bad : ndarray
        Overwritten: range ``r``'s invalid pixels that have weights (a pixel without has its
        block at ``n_bins``, in the padding) are ``bad[bounds[r]:bounds[r] + n_bad[r]]``.
    """
    n_bins = acc.shape[1] // 2 - BLOCK
    for r in numba.prange(len(bounds) - 1):
        a = acc[r]
        a[:] = 0.0
        found = 0
        for p in range(bounds[r], bounds[r + 1]):
            x = np.float64(frame[p])
            if x >= 0.0 and x < max_count:
                _add_block(a, np.int64(first[p]), coef[p], x, max(x, 1.0))
            elif first[p] < n_bins:
                bad[bounds[r] + found] = p
                found += 1
        n_bad[r] = found
        for k in range(extra_bounds[r], extra_bounds[r + 1]):
            x = np.float64(frame[extra_pixel[k]])
            if x >= 0.0 and x < max_count:
                _add_block(a, np.int64(extra_first[k]), extra_coef[k], x, max(x, 1.0))


@numba.njit(cache=True, nogil=True)
def pixel_sums(pixels: np.ndarray, n_listed: np.ndarray, bounds: np.ndarray, first: np.ndarray, coef: np.ndarray,
               extra_pixel: np.ndarray, extra_first: np.ndarray, extra_coef: np.ndarray, u: np.ndarray,
               w: np.ndarray, out: np.ndarray) -> None:
    """Over listed pixels (``pixels[bounds[r]:bounds[r] + n_listed[r]]`` for each ``r``, as
    :func:`block_sums` lists the invalid ones), ``sum c*u``, ``sum c*w`` and ``sum c`` per
    bin into ``out`` (``(n_bins + BLOCK, 3)`` float64, overwritten); ``u`` and ``w`` per
    pixel (flattened), e.g. normalization and dark."""
    out[:] = 0.0
    for r in range(len(bounds) - 1):
        for i in range(bounds[r], bounds[r] + n_listed[r]):
            p = pixels[i]
            _spread_block(out, np.int64(first[p]), coef[p], u[p], w[p])
            k = np.searchsorted(extra_pixel, p)
            while k < len(extra_pixel) and extra_pixel[k] == p:
                _spread_block(out, np.int64(extra_first[k]), extra_coef[k], u[p], w[p])
                k += 1


@numba.njit(inline="always")
def _spread_block(out: np.ndarray, first: int, c: np.ndarray, u: float, w: float) -> None:
    for j in range(BLOCK):
        weight = np.float64(c[j])
        out[first + j, 0] += weight * u
        out[first + j, 1] += weight * w
        out[first + j, 2] += weight


@numba.njit(cache=True)
def _count_blocks(colptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Blocks per pixel of a CSC matrix with sorted rows (0 for a pixel without weights)."""
    n = np.zeros(len(colptr) - 1, np.int64)
    for p in range(len(colptr) - 1):
        end = -1
        for k in range(colptr[p], colptr[p + 1]):
            if rows[k] >= end:
                n[p] += 1
                end = rows[k] + BLOCK
    return n


@numba.njit(cache=True)
def _fill_blocks(colptr: np.ndarray, rows: np.ndarray, data: np.ndarray, first: np.ndarray, coef: np.ndarray,
                 extra_pixel: np.ndarray, extra_first: np.ndarray, extra_coef: np.ndarray) -> None:
    """Cover each pixel's sorted rows greedily with blocks: the first into ``first`` and
    ``coef`` (row ``p``), the others in order into the ``extra_*`` arrays."""
    e = -1
    for p in range(len(colptr) - 1):
        start, block = -1, -1
        for k in range(colptr[p], colptr[p + 1]):
            if block < 0 or rows[k] >= start + BLOCK:
                start = rows[k]
                block += 1
                if block == 0:
                    first[p] = start
                else:
                    e += 1
                    extra_pixel[e], extra_first[e] = p, start
            if block == 0:
                coef[p, rows[k] - start] = data[k]
            else:
                extra_coef[e, rows[k] - start] = data[k]


def to_blocks(colptr: np.ndarray, rows: np.ndarray, data: np.ndarray, n_bins: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Blocks of a CSC matrix (bins x pixels) with sorted row indices: ``first``, ``coef``
    (one primary block per pixel; a pixel without weights has first bin ``n_bins``, in
    the kernel's padding, and zero weights), ``extra_pixel``, ``extra_first``,
    ``extra_coef`` (secondary blocks by pixel).
    First bins are uint16 when every block fits below 65536, else int32."""
    per_pixel = _count_blocks(colptr, rows)
    n_extra = int(np.maximum(per_pixel - 1, 0).sum())
    index = np.uint16 if n_bins + BLOCK <= np.iinfo(np.uint16).max else np.int32
    first, coef = np.full(len(per_pixel), n_bins, index), np.zeros((len(per_pixel), BLOCK), np.float32)
    extra_pixel, extra_first = np.zeros(n_extra, np.int32), np.zeros(n_extra, index)
    extra_coef = np.zeros((n_extra, BLOCK), np.float32)
    _fill_blocks(colptr, rows, data, first, coef, extra_pixel, extra_first, extra_coef)
    return first, coef, extra_pixel, extra_first, extra_coef


def balanced_ranges(extra_pixel: np.ndarray, n_pixels: int, n_ranges: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boundaries splitting the blocks into ``n_ranges`` runs of about equal numbers
    of blocks (int64, from 0 to ``n_pixels``), and the matching boundaries of the
    secondary blocks."""
    extra_before = np.zeros(n_pixels + 1, np.int64)  # secondary blocks of the pixels before each (sorted by pixel)
    np.cumsum(np.bincount(extra_pixel, minlength=n_pixels)[:n_pixels], out=extra_before[1:])
    blocks_before = np.arange(n_pixels + 1) + extra_before
    bounds = np.searchsorted(blocks_before, np.linspace(0, blocks_before[-1], n_ranges + 1), side="left")
    bounds[0], bounds[-1] = 0, n_pixels
    return bounds.astype(np.int64), np.searchsorted(extra_pixel, bounds).astype(np.int64)


@numba.njit(parallel=True, cache=True, nogil=True)
def sum_frames(frames: np.ndarray, max_count: float, out: np.ndarray) -> int:
    """Sum a stack of frames pixel by pixel into ``out`` (one pass, multi-threaded);
    a pixel negative, non-finite or at/above ``max_count`` in any frame becomes -1
    (invalid for :func:`block_sums`).

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
        # frame by frame along a row, so that the inner loop runs over contiguous
        # memory without a branch (SIMD); an invalid value makes the sum -inf
        row = out[r]
        row[:] = 0.0
        row_saturated = 0
        for i in range(n):
            values = frames[i, r]
            for c in range(cols):
                x = np.float64(values[c])
                row[c] += x if x >= 0.0 and x < max_count else -np.inf
                row_saturated += x >= max_count
        for c in range(cols):
            if row[c] == -np.inf:
                row[c] = -1.0
        saturated += row_saturated
    return saturated
