"""Lattice strain along and across a load from per-sector (azimuthal) strains.

In a transmission tensile test with the load in the detector plane at azimuth chi_L,
the ring's lattice strain at azimuth chi is

    eps(chi) = eps_L cos^2(chi - chi_L) + eps_T sin^2(chi - chi_L)

(the diffraction vector is nearly perpendicular to the beam at small 2theta). A cake
sector's peak is the mean of cos^2 over the pixels it holds — over its whole width,
or only part of it where the detector's edge or a gap cuts the ring — so that mean is
taken from the pixels themselves; fitting the model to all sectors by weighted least
squares gives eps_L and eps_T with their covariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Fewest usable sectors for the two-parameter fit.
MIN_SECTORS = 4


@dataclass(frozen=True)
class DirectionalStrain:
    """Lattice strain along (``loading``) and across (``transverse``) the load, with
    1-sigma errors, the fit's reduced chi-square and the sectors used; NaN and
    ``success`` False with the reason when too few sectors were usable."""

    loading: float
    loading_sigma: float
    transverse: float
    transverse_sigma: float
    reduced_chi2: float
    sectors: int
    success: bool
    reason: str = ""


def sector_cos2(cos2chi: np.ndarray, sin2chi: np.ndarray, loading_azimuth_deg: float) -> np.ndarray:
    """Mean cos^2(chi - chi_L) of sectors from their pixels' mean cos(2 chi) and
    sin(2 chi) (:attr:`CorrectedIntegrator.azimuthal_moments`), for a load at
    ``loading_azimuth_deg`` (deg): exact however much of a sector the detector sees."""
    two = math.radians(2 * loading_azimuth_deg)
    return 0.5 * (1 + math.cos(two) * np.asarray(cos2chi) + math.sin(two) * np.asarray(sin2chi))


def directional_strain(cos2: np.ndarray, strain: np.ndarray, strain_sigma: np.ndarray) -> DirectionalStrain:
    """Fit eps_L cos^2 + eps_T sin^2 to per-sector strains.

    Parameters
    ----------
    cos2 : ndarray
        Each sector's mean cos^2(chi - chi_L) (dimensionless, :func:`sector_cos2`).
    strain, strain_sigma : ndarray
        Per-sector lattice strain and its 1-sigma error (dimensionless); NaN sectors
        (failed fits) are left out.
    """
    strain, sigma = np.asarray(strain, float), np.asarray(strain_sigma, float)
    use = np.isfinite(strain) & np.isfinite(sigma) & (sigma > 0) & np.isfinite(cos2)
    c2 = np.asarray(cos2, float)[use]
    n = int(use.sum())
    if n < MIN_SECTORS or np.ptp(c2) < 0.5:
        nan = float("nan")
        return DirectionalStrain(nan, nan, nan, nan, nan, n, False,
                                 f"{n} usable sectors covering cos^2 {np.ptp(c2) if n else 0:.2f} of the load's "
                                 f"range: need {MIN_SECTORS} spanning both directions")
    design = np.column_stack([c2, 1.0 - c2]) / sigma[use, None]
    rhs = strain[use] / sigma[use]
    solution, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    covariance = np.linalg.inv(design.T @ design)
    chi2 = float(np.sum((design @ solution - rhs) ** 2))
    err = np.sqrt(np.diag(covariance))
    return DirectionalStrain(float(solution[0]), float(err[0]), float(solution[1]), float(err[1]),
                             chi2 / (n - 2), n, True)
