"""X-ray attenuation of materials from xraylib cross-sections."""

from __future__ import annotations

import math
from dataclasses import dataclass

import xraylib

from ..errors import SampleError


@dataclass(frozen=True)
class Material:
    """A material by chemical formula and (effective) density in g/cm^3."""

    formula: str
    density_g_cm3: float

    def __post_init__(self) -> None:
        try:
            xraylib.CompoundParser(self.formula)
        except ValueError as exc:
            raise SampleError(f"cannot parse chemical formula {self.formula!r}: {exc}") from exc
        if not (self.density_g_cm3 > 0 and math.isfinite(self.density_g_cm3)):
            raise SampleError(f"density of {self.formula!r} must be > 0 g/cm^3")

    def attenuation_coefficient_per_cm(self, energy_keV: float) -> float:
        """Linear attenuation coefficient mu (1/cm) at ``energy_keV`` (keV), all processes."""
        return xraylib.CS_Total_CP(self.formula, float(energy_keV)) * self.density_g_cm3

    def transmission(self, thickness_mm: float, energy_keV: float) -> float:
        """Transmission exp(-mu t) of a slab ``thickness_mm`` (mm) thick at ``energy_keV`` (keV)."""
        return math.exp(-self.attenuation_coefficient_per_cm(energy_keV) * thickness_mm * 0.1)
