"""The simulated beamline's sample library: the powders, amorphous scatterers and
total-scattering samples of :mod:`.samples` and :mod:`.total_scattering`, by name."""

from __future__ import annotations

from ..crystal import ceo2, lab6, magnesium
from ..materials import Material
from .samples import (
    AmorphousSample,
    EmptySample,
    PowderSample,
    Sample,
    TensileResponse,
    buffer_cross_section,
    glass_cross_section,
    sample_in_buffer_cross_section,
    water_cross_section,
)
from .total_scattering import amorphous_silicon, nickel_powder


def default_library() -> dict[str, Sample]:
    """The simulated beamline's samples, by name."""
    water = Material("H2O", 1.0)
    samples: list[Sample] = [
        PowderSample("CeO2", Material("CeO2", 7.215 * 0.5), 0.02, crystal=ceo2()),
        PowderSample("LaB6", Material("LaB6", 4.72 * 0.5), 0.05, crystal=lab6()),
        PowderSample("Mg", Material("Mg", 1.738), 0.5, crystal=magnesium(),
                     strongest_ring_cm_sr=50.0, fwhm_deg=0.04, tensile=TensileResponse()),
        AmorphousSample("glass", Material("SiO2Na0.3Ca0.1", 2.5), 1.0,
                        cross_section_q=glass_cross_section),
        AmorphousSample("water", water, 1.0, cross_section_q=water_cross_section),
        AmorphousSample("buffer", water, 1.0, cross_section_q=buffer_cross_section),
        AmorphousSample("sample_in_buffer", water, 1.0, cross_section_q=sample_in_buffer_cross_section),
        EmptySample("empty", None, 0.0),
        nickel_powder(),      # fcc Ni, 250 A crystallites, 1 mm capillary at 50 % packing: known G(r)
        amorphous_silicon(),  # a-Si, 1 mm capillary at 50 % packing: known G(r)
    ]
    return {s.name: s for s in samples}
