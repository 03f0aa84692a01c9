"""Masks derived from the data: shadows (beamstop and its arm) and bright outliers.

Both compare each pixel with the median of its ring (1-pixel-wide annuli around the
beam centre), so they work on any isotropic scatterer whatever its q dependence.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..geometry import Poni
from .integration import check_frame_shape


def ring_median(image: np.ndarray, poni: Poni, invalid: np.ndarray) -> np.ndarray:
    """Image of the median of each pixel's 1-pixel-wide ring (valid pixels only; NaN
    for rings without any)."""
    check_frame_shape(image, poni, "image")
    ai = poni.integrator()
    ring = np.rint(ai.array_from_unit(unit="r_m") / min(ai.pixel1, ai.pixel2)).astype(np.int64)
    medians = ndimage.median(image[~invalid], ring[~invalid], index=np.arange(ring.max() + 1))
    return np.asarray(medians, np.float64)[ring]


def shadowed_pixels(signal: np.ndarray, poni: Poni, invalid: np.ndarray, *, fraction: float = 0.8,
                    grow_px: int = 3) -> np.ndarray:
    """Pixels of a strongly scattering, dark-subtracted frame (counts) below
    ``fraction`` of their ring's median — the beamstop, its arm, their penumbra — grown
    by ``grow_px`` pixels. ``invalid`` (True = bad) pixels are ignored."""
    low = (signal < fraction * ring_median(signal, poni, invalid)) & ~invalid
    return ndimage.binary_dilation(low, iterations=grow_px) if grow_px else low


def bright_pixels(signal: np.ndarray, poni: Poni, invalid: np.ndarray, *, factor: float = 3.0,
                  offset: float = 10.0, grow_px: int = 1) -> np.ndarray:
    """Pixels above ``factor`` times their ring's median plus ``offset`` (counts) —
    streaks, zingers, hot pixels — grown by ``grow_px`` pixels."""
    high = (signal > factor * ring_median(signal, poni, invalid) + offset) & ~invalid
    return ndimage.binary_dilation(high, iterations=grow_px) if grow_px else high
