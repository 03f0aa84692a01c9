"""Per-pixel quantities of a detector geometry and of what shadows it: the 2theta,
azimuth, solid angle and polarization of every pixel, the detector's modules, and the
beamstop's shadow. Used by the analyses and by the simulator alike."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .geometry import Poni


@dataclass(frozen=True)
class Beamstop:
    """A beamstop fixed in the laboratory on the direct beam.

    A disc of ``radius_mm`` (mm) held by an arm ``arm_width_mm`` wide pointing towards
    azimuth ``arm_azimuth_deg`` (pyFAI chi, deg), ``distance_mm`` downstream of the
    sample. Its shadow moves on the detector when the detector moves.
    """

    radius_mm: float = 1.5
    arm_width_mm: float = 0.8
    arm_azimuth_deg: float = 0.0
    distance_mm: float = 150.0

    def shadow(self, pixels: PixelGeometry, margin_mm: float = 0.0) -> np.ndarray:
        """Boolean image, True where the beamstop (grown by ``margin_mm``, mm) shadows."""
        r = self.distance_mm * np.tan(pixels.two_theta)
        dchi = pixels.chi - math.radians(self.arm_azimuth_deg)
        disc = r < self.radius_mm + margin_mm
        arm = (np.cos(dchi) > 0) & (np.abs(r * np.sin(dchi)) < self.arm_width_mm / 2 + margin_mm)
        return disc | arm

    def as_dict(self) -> dict:
        return {"radius_mm": self.radius_mm, "arm_width_mm": self.arm_width_mm,
                "arm_azimuth_deg": self.arm_azimuth_deg, "distance_mm": self.distance_mm}


@dataclass(frozen=True)
class PixelGeometry:
    """Per-pixel arrays of a geometry: 2theta and chi (rad), the half-width of each
    pixel's 2theta footprint (rad), absolute solid angle (sr), polarization factor."""

    two_theta: np.ndarray
    half_width: np.ndarray
    chi: np.ndarray
    solid_angle_sr: np.ndarray
    polarization: np.ndarray


@lru_cache(maxsize=2)
def pixel_geometry(poni: Poni, polarization_factor: float = 0.99) -> PixelGeometry:
    """Compute (and cache) the per-pixel arrays of ``poni``: those of the last two
    geometries are kept (a Pilatus 2M's take 96 MB), enough for the frames of one
    position after another."""
    ai = poni.integrator()
    tth = ai.center_array(unit="2th_rad")
    g1, g2 = np.gradient(tth)
    # For a quantity varying linearly over a pixel, corners deviate by (|g1| + |g2|) / 2.
    half_width = 0.5 * (np.abs(g1) + np.abs(g2))
    return PixelGeometry(
        two_theta=tth,
        half_width=half_width,
        chi=ai.center_array(unit="chi_rad"),
        solid_angle_sr=ai.solidAngleArray(absolute=True),
        polarization=ai.polarization(factor=polarization_factor),
    )


def module_slices(det) -> list[tuple[slice, slice]]:
    """Row and column slices of each detector module (one module if not modular)."""
    size = getattr(det, "MODULE_SIZE", None)
    gap = getattr(det, "MODULE_GAP", None)
    if size is None or gap is None:
        return [(slice(None), slice(None))]
    starts = [range(0, n, s + g) for n, s, g in zip(det.shape, size, gap)]
    return [(slice(r, r + size[0]), slice(c, c + size[1])) for r in starts[0] for c in starts[1]]
