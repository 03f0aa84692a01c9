"""X-ray attenuation of a crystal for DF-XRM planning: attenuation length and transmission.

The linear attenuation coefficient is mu = (mu/rho) * rho, where mu/rho (cm^2/g) is
xraylib's total cross-section of the formula (``CS_Total_CP``: photoabsorption, Rayleigh
and Compton) and rho (g/cm^3) the density of the structure's cell content; it is computed
by :class:`~xrd_bluesky.science.materials.Material`. The attenuation length is 1/mu and
the transmission of a slab of thickness t is exp(-t / attenuation length).

Energies are checked against the planning range :data:`ENERGY_RANGE_KEV`.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import GeometryError
from ..materials import Material
from .cif_structure import CrystalStructure

#: Photon energies (keV) the DF-XRM planning accepts.
ENERGY_RANGE_KEV = (1.0, 60.0)


def check_energy_keV(energy_keV: float) -> float:
    """Return ``energy_keV`` (keV) as a float if it lies in :data:`ENERGY_RANGE_KEV`.

    Raises
    ------
    GeometryError
        If the energy is not finite or outside the planning range.
    """
    lo, hi = ENERGY_RANGE_KEV
    energy = float(energy_keV)
    if not (math.isfinite(energy) and lo <= energy <= hi):
        raise GeometryError(f"photon energy {energy_keV!r} keV is outside the range {lo:g}-{hi:g} keV "
                            "of the DF-XRM planning (xraylib cross-sections)")
    return energy


def material_of(structure: CrystalStructure) -> Material:
    """The :class:`Material` (formula, density in g/cm^3) of a crystal structure."""
    return Material(structure.formula, structure.density_g_cm3)


def attenuation_length_um(material: Material, energy_keV: float) -> float:
    """Attenuation length 1/mu (um) of ``material`` at ``energy_keV`` (keV).

    Raises
    ------
    GeometryError
        If the energy is outside :data:`ENERGY_RANGE_KEV`.
    """
    mu_per_cm = material.attenuation_coefficient_per_cm(check_energy_keV(energy_keV))
    return 1e4 / mu_per_cm


def attenuation_length_curve_um(material: Material, energies_keV: np.ndarray) -> np.ndarray:
    """Attenuation length (um) at each of ``energies_keV`` (keV)."""
    return np.array([attenuation_length_um(material, e) for e in np.asarray(energies_keV, dtype=float)])


def transmission(material: Material, thickness_um: np.ndarray | float, energy_keV: float) -> np.ndarray:
    """Transmission exp(-t/L) of slabs of thickness ``thickness_um`` (um) along the beam.

    Parameters
    ----------
    material : Material
        The sample's material.
    thickness_um : float or ndarray
        Path length(s) through the sample (um), >= 0.
    energy_keV : float
        Photon energy (keV).

    Raises
    ------
    GeometryError
        If a thickness is negative or the energy is outside :data:`ENERGY_RANGE_KEV`.
    """
    t = np.asarray(thickness_um, dtype=float)
    if np.any(t < 0) or not np.all(np.isfinite(t)):
        raise GeometryError(f"sample thickness must be finite and >= 0 um, got {thickness_um!r}")
    return np.exp(-t / attenuation_length_um(material, energy_keV))
