"""Stitching frames from several detector positions into one pattern.

The definition is pyFAI's ``MultiGeometry``: every position is integrated into the same
bins with the absolute solid angle in its normalization, the per-bin sums of signal,
variance, normalization and pixel count are added over positions, and only then
divided — so a bin seen by two positions gets the counts-weighted mean, not the mean
of two means, and the overlap has no step beyond noise.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ...errors import GeometryError
from ..geometry import Poni
from .corrected_integration import BinSums
from .integration import UNITS, radial_coverage
from .shared_preparations import KeptPreparations


def covered_radial_range(ponis: Iterable[Poni], unit: str = "q_nm^-1") -> tuple[float, float]:
    """The radial range (in ``unit``) the pixel centres of all geometries cover,
    as pyFAI's ``MultiGeometry`` guesses it when none is given."""
    if unit not in UNITS:
        raise GeometryError(f"unknown radial unit {unit!r}; use one of {sorted(UNITS)}")
    coverage = [detector_coverage(poni, unit) for poni in ponis]
    if not coverage:
        raise GeometryError("no detector position to cover")
    return min(low for low, _ in coverage), max(high for _, high in coverage)


def stitch(sums: Iterable[BinSums | None]) -> BinSums:
    """Add the per-bin sums of several positions (or frames) sharing the same bins
    (None entries, e.g. an empty running total, are skipped)."""
    total = None
    for s in sums:
        if s is not None:
            total = s if total is None else total + s
    if total is None:
        raise ValueError("nothing to stitch")
    return total


def detector_coverage(poni: Poni, unit: str, *, wait: bool = True) -> tuple[float, float] | None:
    """The radial range (in ``unit``) the pixel centres of the detector at ``poni``
    cover (:func:`~.integration.radial_coverage`), computed once per geometry and unit
    (:data:`_COVERAGES`); None when not ``wait`` and another process computes it."""
    return _COVERAGES.get((poni, unit), lambda: radial_coverage(poni, unit), wait=wait)


def _coverage_arrays(coverage: tuple[float, float]) -> dict[str, np.ndarray]:
    return {"range": np.array(coverage, np.float64)}


def _coverage(arrays: dict[str, np.ndarray]) -> tuple[float, float]:
    """The coverage of :func:`_coverage_arrays`; ValueError if it is not two numbers."""
    bounds = np.asarray(arrays.get("range"))
    if bounds.shape != (2,) or bounds.dtype != np.float64:
        raise ValueError("its range is not two numbers")
    return float(bounds[0]), float(bounds[1])


#: The detector coverages used last in this process, shared with the processes sharing
#: their preparations (:mod:`~.shared_preparations`).
_COVERAGES: KeptPreparations[tuple[float, float]] = KeptPreparations("detector coverage", 64, _coverage_arrays,
                                                                     _coverage)
