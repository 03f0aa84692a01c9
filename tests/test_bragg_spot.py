"""Bragg spot of a mosaic single crystal: pixel directions are pyFAI's pixel positions in
our lab frame, a spot on the detector delivers all its photons, the photons integrated over
a rocking curve are Q l_in A whatever the mosaic spread, and a spot off the detector
deposits nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xrd_bluesky.science.detector_pixels import pixel_geometry
from xrd_bluesky.science.dfxrm.cif_structure import cell_volume_A3, read_cif
from xrd_bluesky.science.dfxrm.orientation import (
    GoniometerAngles,
    bragg_deviations_deg,
    orient,
)
from xrd_bluesky.science.dfxrm.reflection_table import reflection_table
from xrd_bluesky.science.geometry import Poni, detector_model
from xrd_bluesky.science.sim.bragg_spot import (
    bragg_spot,
    integrated_reflectivity_per_cm,
    pixel_directions,
    spot_fraction,
)
from xrd_bluesky.science.units import wavelength_m

ENERGY_KEV = 17.0
DETECTOR = "Pilatus100k"


def _poni_facing(two_theta_deg: float) -> Poni:
    """Detector normal to the beam, 0.2 m away, its centre 2theta up from the beam."""
    det = detector_model(DETECTOR)
    rows, cols = det.shape
    return Poni(0.2, rows / 2 * det.pixel1 - 0.2 * math.tan(math.radians(two_theta_deg)), cols / 2 * det.pixel2,
                wavelength=wavelength_m(ENERGY_KEV), detector=DETECTOR)


def test_pixel_directions_are_pyfai_positions_in_our_frame():
    """pyFAI's x3 (beam), x2, x1 (up) are our x, -y, z, with tilts and rotations (pyFAI's 2theta
    and chi arrays agree with its pixel positions to 2e-8)."""
    poni = Poni(0.2, 0.01, 0.03, rot1=0.1, rot2=-0.2, rot3=0.05, wavelength=wavelength_m(ENERGY_KEV),
                detector=DETECTOR)
    t3, t1, t2 = poni.integrator().calc_pos_zyx(corners=False)
    ours = np.stack([t3, -t2, t1], axis=-1)
    ours /= np.linalg.norm(ours, axis=-1, keepdims=True)
    assert np.allclose(pixel_directions(pixel_geometry(poni)), ours, rtol=0, atol=1e-7)  # pyFAI: ~2e-8


def test_a_spot_on_the_detector_delivers_all_its_photons():
    pixels = pixel_geometry(_poni_facing(30.0))
    direction = pixel_directions(pixels)[97, 243]
    assert spot_fraction(direction, pixels, 0.2).sum() == pytest.approx(1.0, rel=1e-3)


def test_rocking_integral_is_independent_of_the_mosaic():
    """Si 004 rocked about chi (sensitivity -1) through +-6 mosaic FWHM: the sum of the
    spot's photons times the step (rad) is Q l_in A for mosaic spreads 0.005 and 0.02 deg
    (sigma-polarized: P = 1 with pyFAI's polarization factor 1 in the vertical plane)."""
    structure = read_cif("Si")
    table = reflection_table(structure, ENERGY_KEV)
    sol = orient(table, (0, 0, 4), thickness_um=100.0)
    tth = sol.reflection.two_theta_deg
    pixels = pixel_geometry(_poni_facing(tth), 1.0)
    length_um = 560.0
    expected = (integrated_reflectivity_per_cm(sol.reflection.f_squared, tth, table.wavelength_A,
                                               cell_volume_A3(structure.crystal))
                * sol.beam_path.incident_um * 1e-4 * sol.beam_path.diffracted_transmission(length_um))
    a = sol.angles
    for mosaic in (0.005, 0.02):
        offsets = np.linspace(-6 * mosaic, 6 * mosaic, 121)
        total = 0.0
        for offset in offsets:
            rotation = GoniometerAngles(a.omega_deg, a.chi_deg + offset, a.phi_deg).rotation()
            g = rotation @ sol.ub @ np.array([0.0, 0.0, 4.0])
            total += bragg_spot(g, float(bragg_deviations_deg(g, table.wavelength_A)), sol.reflection.f_squared,
                                wavelength_A=table.wavelength_A, cell_volume_A3=cell_volume_A3(structure.crystal),
                                mosaic_fwhm_deg=mosaic, spot_fwhm_deg=0.1, rotation=rotation, thickness_um=100.0,
                                attenuation_length_um=length_um, pixels=pixels).sum()
        assert total * math.radians(offsets[1] - offsets[0]) == pytest.approx(expected, rel=2e-3)


def test_a_spot_off_the_detector_deposits_nothing():
    structure = read_cif("Si")
    table = reflection_table(structure, ENERGY_KEV)
    sol = orient(table, (0, 0, 4))
    g = sol.condition.scattering_vector_per_A
    image = bragg_spot(g, 0.0, sol.reflection.f_squared, wavelength_A=table.wavelength_A,
                       cell_volume_A3=cell_volume_A3(structure.crystal), mosaic_fwhm_deg=0.01, spot_fwhm_deg=0.1,
                       rotation=sol.angles.rotation(), thickness_um=100.0, attenuation_length_um=560.0,
                       pixels=pixel_geometry(_poni_facing(0.0)))
    assert not image.any()
