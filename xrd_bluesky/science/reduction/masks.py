"""Masks: the beamstop's shadow from the geometry, and masks derived from the data
(shadows of the beamstop and its arm, bright outliers).

The masks derived from the data compare each pixel with the median of its ring
(1-pixel-wide annuli around the beam centre), so they work on any isotropic scatterer
whatever its q dependence.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..detector_pixels import Beamstop, pixel_geometry
from ..geometry import Poni
from .integration import check_frame_shape
from .shared_preparations import KeptPreparations


def beamstop_shadow(beamstop: Beamstop, poni: Poni, margin_mm: float = 0.0, *,
                    wait: bool = True) -> np.ndarray | None:
    """Boolean image of the detector at ``poni``, True where ``beamstop`` (grown by
    ``margin_mm``, mm) shadows it.

    Computed once per beamstop, margin and geometry from the pixel geometry
    (:func:`~xrd_bluesky.science.detector_pixels.pixel_geometry`, whose arrays the
    simulator shares), and kept as bits (:data:`_SHADOWS`; 0.3 MB for a Pilatus 2M),
    also for the processes sharing their preparations (:mod:`~.shared_preparations`).
    None when not ``wait`` and another process computes it.
    """
    shape = tuple(poni.detector_model().shape)
    bits = _SHADOWS.get((beamstop, float(margin_mm), poni),
                        lambda: np.packbits(beamstop.shadow(pixel_geometry(poni), margin_mm)), wait=wait)
    return None if bits is None else np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).view(bool)


def _shadow_bits(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The packed shadow saved as ``arrays``; ValueError if it is not one."""
    bits = np.asarray(arrays.get("bits"))
    if bits.dtype != np.uint8 or bits.ndim != 1:
        raise ValueError("its shadow is not packed bits")
    return bits


#: The beamstop shadows used last in this process (packed bits), shared with the
#: processes sharing their preparations (:mod:`~.shared_preparations`).
_SHADOWS: KeptPreparations[np.ndarray] = KeptPreparations("beamstop shadow", 32, lambda bits: {"bits": bits},
                                                          _shadow_bits)


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
