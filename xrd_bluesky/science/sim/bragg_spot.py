"""The Bragg spot of one reflection of a mosaic single crystal on an area detector.

Kinematic theory, no extinction. A reflection of structure factor F, rocked through the
Bragg condition about an axis perpendicular to its scattering plane, reflects per unit
illuminated volume the integrated power (Warren, *X-ray Diffraction*, eq. 4.16; Als-Nielsen
& McMorrow, eq. 5.29)

    Q = r_e^2 lambda^3 |F|^2 / (V_c^2 sin 2theta_B)        (1/cm, per rad of rocking),

the polarization factor aside. A mosaic crystal held still at a deviation delta from the
Bragg condition (:func:`~xrd_bluesky.science.dfxrm.orientation.bragg_deviations_deg`)
reflects the fraction W(delta) of that, W a Gaussian of FWHM the mosaic spread normalised
to unit area over delta (1/rad). So, per incident photon, a slab crystal sends

    Q x l_in x A x W(delta) x P

photons into the spot: l_in the incident path through the slab (cm), A the transmission
of the incident plus diffracted paths averaged over the depth
(:meth:`~xrd_bluesky.science.dfxrm.orientation.BeamPath.diffracted_transmission`), P the
polarization factor of the pixels the spot falls on. Kinematic theory overestimates
strong reflections of thick, nearly perfect crystals, whose peak reflectivity Q l_in W(0)
approaches or exceeds 1; the spot's rocking curve stays the mosaic Gaussian.

Direction. The mosaic blocks in condition are those whose G lies on the Bragg cone nearest
the mean G, i.e. G turned towards or away from the beam in the plane of k_in and G: they
diffract at 2theta_B from the beam, at the azimuth of G about the beam.

Spot. Around that direction k the photons spread as a von Mises-Fisher distribution, the
Gaussian of the sphere, of FWHM ``spot_fwhm_deg`` (beam size and divergence seen from the
detector): kappa / (2 pi) exp(-kappa (1 - cos a)) per sr, kappa = 1/sigma^2, so each pixel
receives that times its solid angle, and a spot off the detector deposits nothing.

Lab frames. Ours (:mod:`~xrd_bluesky.science.dfxrm.orientation`): x along the beam, z up,
y to the left looking downstream. pyFAI's: x3 along the beam, x1 up (the detector's dim1 at
zero tilt), x2 = x3 x x1 (to the right), chi = atan2(x1, x2). A pixel at 2theta, chi
therefore lies along (cos 2theta, -sin 2theta cos chi, sin 2theta sin chi) in ours: chi = 90
deg is up (the vertical scattering plane), chi = 180 deg is +y (the horizontal one).
"""

from __future__ import annotations

import math

import numpy as np

from ..detector_pixels import PixelGeometry
from ..dfxrm.orientation import beam_path

#: Classical electron radius (cm), CODATA 2018.
CLASSICAL_ELECTRON_RADIUS_CM = 2.8179403262e-13
#: FWHM of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def integrated_reflectivity_per_cm(f_squared: float, two_theta_deg: float, wavelength_A: float,
                                   cell_volume_A3: float) -> float:
    """Kinematic integrated reflectivity Q = r_e^2 lambda^3 |F|^2 / (V_c^2 sin 2theta).

    Parameters
    ----------
    f_squared : float
        |F(hkl)|^2 (electrons^2).
    two_theta_deg : float
        Bragg angle 2theta_B (deg).
    wavelength_A : float
        X-ray wavelength (A).
    cell_volume_A3 : float
        Unit-cell volume V_c (A^3).

    Returns
    -------
    float
        Q (1/cm, per rad of rocking), without the polarization factor.
    """
    wavelength_cm, volume_cm3 = wavelength_A * 1e-8, cell_volume_A3 * 1e-24
    return (CLASSICAL_ELECTRON_RADIUS_CM**2 * wavelength_cm**3 * f_squared
            / (volume_cm3**2 * math.sin(math.radians(two_theta_deg))))


def mosaic_distribution_per_rad(deviation_deg: float, mosaic_fwhm_deg: float) -> float:
    """Fraction of the mosaic blocks per rad of deviation: a Gaussian of unit area (1/rad).

    Parameters
    ----------
    deviation_deg : float
        Deviation from the Bragg condition (deg).
    mosaic_fwhm_deg : float
        Mosaic spread, FWHM (deg).
    """
    sigma = math.radians(mosaic_fwhm_deg) / FWHM_PER_SIGMA
    return math.exp(-0.5 * (math.radians(deviation_deg) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))


def diffracted_direction(g_lab: np.ndarray, two_theta_deg: float) -> np.ndarray | None:
    """Unit lab direction of the spot: 2theta_B from the beam at the azimuth of ``g_lab``.

    Parameters
    ----------
    g_lab : ndarray
        Lab-frame scattering vector (any length).
    two_theta_deg : float
        Bragg angle 2theta_B (deg).

    Returns
    -------
    ndarray or None
        (cos 2theta, sin 2theta g_y, sin 2theta g_z) with (g_y, g_z) the unit part of G
        across the beam; None if G lies along the beam (no azimuth, no block in condition).
    """
    across = math.hypot(g_lab[1], g_lab[2])
    if across == 0.0:
        return None
    tth = math.radians(two_theta_deg)
    return np.array([math.cos(tth), math.sin(tth) * g_lab[1] / across, math.sin(tth) * g_lab[2] / across])


def pixel_directions(pixels: PixelGeometry) -> np.ndarray:
    """Unit lab directions (our frame, see the module docstring) of the pixel centres.

    Returns
    -------
    ndarray
        Shape (rows, columns, 3).
    """
    tth, chi = pixels.two_theta, pixels.chi
    return np.stack([np.cos(tth), -np.sin(tth) * np.cos(chi), np.sin(tth) * np.sin(chi)], axis=-1)


def spot_fraction(direction: np.ndarray, pixels: PixelGeometry, spot_fwhm_deg: float) -> np.ndarray:
    """Fraction of a spot centred on ``direction`` that each pixel receives.

    A von Mises-Fisher distribution of FWHM ``spot_fwhm_deg`` (deg) times each pixel's
    solid angle; sums to 1 over a detector that holds the whole spot.
    """
    kappa = (FWHM_PER_SIGMA / math.radians(spot_fwhm_deg)) ** 2
    one_minus_cos = 1.0 - pixel_directions(pixels) @ direction
    return kappa / (2.0 * math.pi) * np.exp(-kappa * one_minus_cos) * pixels.solid_angle_sr


def bragg_spot(g_lab: np.ndarray, deviation_deg: float, f_squared: float, *, wavelength_A: float,
               cell_volume_A3: float, mosaic_fwhm_deg: float, spot_fwhm_deg: float, rotation: np.ndarray,
               thickness_um: float, attenuation_length_um: float, pixels: PixelGeometry) -> np.ndarray:
    """Expected photons per pixel per incident photon of one reflection (see the module docstring).

    Parameters
    ----------
    g_lab : ndarray
        Lab-frame scattering vector (1/A).
    deviation_deg : float
        Its deviation from the Bragg condition (deg).
    f_squared : float
        |F(hkl)|^2 (electrons^2).
    wavelength_A : float
        X-ray wavelength (A).
    cell_volume_A3 : float
        Unit-cell volume (A^3).
    mosaic_fwhm_deg, spot_fwhm_deg : float
        Mosaic spread and angular size of the spot, FWHM (deg).
    rotation : ndarray
        Goniometer rotation R (sample to lab), which turns the slab.
    thickness_um : float
        Slab thickness along the exit-facet normal (um).
    attenuation_length_um : float
        Attenuation length of the crystal (um).
    pixels : PixelGeometry
        Per-pixel 2theta, chi, solid angle and polarization of the detector.

    Returns
    -------
    ndarray
        float64 image; zeros if the beam runs along the slab or G along the beam.
    """
    tth = math.degrees(2.0 * math.asin(wavelength_A * float(np.linalg.norm(g_lab)) / 2.0))
    direction = diffracted_direction(g_lab, tth)
    if direction is None:
        return np.zeros(pixels.two_theta.shape)
    path = beam_path(rotation, direction, thickness_um)
    if not math.isfinite(path.incident_um):
        return np.zeros(pixels.two_theta.shape)
    photons = (integrated_reflectivity_per_cm(f_squared, tth, wavelength_A, cell_volume_A3)
               * path.incident_um * 1e-4 * path.diffracted_transmission(attenuation_length_um)
               * mosaic_distribution_per_rad(deviation_deg, mosaic_fwhm_deg))
    return photons * spot_fraction(direction, pixels, spot_fwhm_deg) * pixels.polarization
