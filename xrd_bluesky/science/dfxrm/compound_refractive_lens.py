"""Compound refractive lens (CRL): the objective of a DF-XRM microscope.

A CRL is a stack of N biconcave parabolic lenses of apex radius R. X-rays see a
refractive index n = 1 - delta + i beta slightly below 1, so a concave lens focuses; each
lens has two refracting surfaces of focal length R / delta, and in the thin-lens
approximation (stack length much shorter than f) the stack focuses at

    f = R / (2 N delta).

delta = 1 - Re(n) comes from xraylib (``Refractive_Index_Re``: the forward-scattering
form factors of the material's elements and its density). Beryllium is the usual lens
material; Be at 17 keV has delta ~ 1.2e-6, so R = 50 um and N = 30 give f ~ 0.7 m.
"""

from __future__ import annotations

import math

import xraylib

from ...errors import GeometryError, UsageError

#: Lens materials of common CRLs: label -> (chemical formula, density in g/cm^3).
LENS_MATERIALS: dict[str, tuple[str, float]] = {
    "Be": ("Be", 1.848),
    "Al": ("Al", 2.699),
    "Si": ("Si", 2.329),
    "Ni": ("Ni", 8.908),
    "diamond (C)": ("C", 3.515),
}


def refractive_decrement(material: str, energy_keV: float, density_g_cm3: float | None = None) -> float:
    """Refractive index decrement delta = 1 - Re(n) of ``material`` at ``energy_keV``.

    Parameters
    ----------
    material : str
        Chemical formula (``"Be"``, ``"SiO2"``) or xraylib NIST compound name.
    energy_keV : float
        Photon energy (keV), > 0.
    density_g_cm3 : float, optional
        Density (g/cm^3); None takes xraylib's density of a single element (a compound
        needs one).

    Returns
    -------
    float
        delta (dimensionless), > 0.

    Raises
    ------
    GeometryError
        If the energy or the density is not positive and finite.
    UsageError
        If xraylib knows no such material, or a compound is given without a density.
    """
    if not (math.isfinite(energy_keV) and energy_keV > 0):
        raise GeometryError(f"photon energy must be > 0 keV and finite, got {energy_keV!r} keV")
    if density_g_cm3 is None:
        density_g_cm3 = _element_density_g_cm3(material)
    if not (math.isfinite(density_g_cm3) and density_g_cm3 > 0):
        raise GeometryError(f"density of lens material {material!r} must be > 0 g/cm^3, got {density_g_cm3!r}")
    try:
        return 1.0 - xraylib.Refractive_Index_Re(material, float(energy_keV), float(density_g_cm3))
    except ValueError as exc:
        raise UsageError(f"refractive index of {material!r} at {energy_keV:g} keV: {exc}") from exc


def focal_length_m(radius_um: float, n_lenses: int, material: str, energy_keV: float,
                   density_g_cm3: float | None = None) -> float:
    """Thin-lens focal length f = R / (2 N delta) (m) of a CRL.

    Parameters
    ----------
    radius_um : float
        Apex radius of curvature R of each parabolic lens (um), > 0.
    n_lenses : int
        Number of lenses N, >= 1.
    material : str
        Lens material, as for :func:`refractive_decrement` (Be for most CRLs).
    energy_keV : float
        Photon energy (keV).
    density_g_cm3 : float, optional
        Density of the lens material (g/cm^3); None: xraylib's density of the element.

    Raises
    ------
    GeometryError
        If R is not positive and finite, N not a whole number >= 1, or the energy or
        density not positive.
    UsageError
        If xraylib knows no such material.
    """
    if not (math.isfinite(radius_um) and radius_um > 0):
        raise GeometryError(f"lens radius of curvature must be > 0 um and finite, got {radius_um!r} um")
    if isinstance(n_lenses, bool) or int(n_lenses) != n_lenses or n_lenses < 1:
        raise GeometryError(f"number of lenses must be a whole number >= 1, got {n_lenses!r}")
    delta = refractive_decrement(material, energy_keV, density_g_cm3)
    return radius_um * 1e-6 / (2 * int(n_lenses) * delta)


def _element_density_g_cm3(material: str) -> float:
    """xraylib's density (g/cm^3) of a material that is one element."""
    try:
        parsed = xraylib.CompoundParser(material)
    except ValueError as exc:
        raise UsageError(f"lens material {material!r} is not a chemical formula: {exc}") from exc
    if parsed["nElements"] != 1:
        raise UsageError(f"lens material {material!r} is a compound: give its density (g/cm^3)")
    return xraylib.ElementDensity(parsed["Elements"][0])
