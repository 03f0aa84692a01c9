"""Physical constants and unit conversions used across the package."""

import math

import numpy as np

from ..errors import GeometryError

#: h*c in keV * Angstrom (CODATA 2018).
HC_KEV_ANGSTROM = 12.398419843320026


def wavelength_m(energy_keV: float) -> float:
    """Return the X-ray wavelength in metres for a photon energy in keV."""
    if not math.isfinite(energy_keV) or energy_keV <= 0:
        raise GeometryError(f"photon energy must be positive and finite, got {energy_keV!r} keV")
    return HC_KEV_ANGSTROM / energy_keV * 1e-10


def energy_keV(wavelength_m_: float) -> float:
    """Return the photon energy in keV for a wavelength in metres."""
    return HC_KEV_ANGSTROM / (wavelength_m_ * 1e10)


def q_nm(two_theta_rad, wavelength_m_: float):
    """Momentum transfer q = 4 pi sin(theta) / lambda in 1/nm for 2theta in radians."""
    return 4e-9 * np.pi * np.sin(np.asarray(two_theta_rad) / 2.0) / wavelength_m_


def two_theta_rad(d_angstrom, wavelength_m_: float):
    """Bragg angle 2theta in radians for d-spacings in Angstrom (NaN where unreachable)."""
    s = wavelength_m_ * 1e10 / (2.0 * np.asarray(d_angstrom, dtype=float))
    with np.errstate(invalid="ignore"):
        return np.where(s <= 1.0, 2.0 * np.arcsin(np.minimum(s, 1.0)), np.nan)
