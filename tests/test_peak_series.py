"""Peak fits on integrated simulated frames: honest uncertainties (and why the fits
need unsplit pixels), automatic peak finding, directional strain."""

import math

import numpy as np
import pytest

from xrd_bluesky.science.detector_pixels import Beamstop
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction.corrected_integration import CorrectedIntegrator
from xrd_bluesky.science.reduction.directional_strain import (
    directional_strain,
    sector_cos2,
)
from xrd_bluesky.science.reduction.peak_fitting import fit_peak
from xrd_bluesky.science.reduction.peak_specs import configured_specs, find_peak_specs
from xrd_bluesky.science.sim.image_formation import expected_photons
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.units import wavelength_m

PONI = Poni(0.3, 0.09, 0.08, wavelength=wavelength_m(17.0), detector="Pilatus1M")


@pytest.fixture(scope="module")
def mg_expected():
    """Expected counts of Mg on a Pilatus 1M (1e11 ph/s, 1 s) and its (101) window."""
    mg = default_library()["Mg"]
    spec, = (s for s in configured_specs({"phase": "Mg", "hkl": [[1, 0, 1]]}, PONI.wavelength))
    return expected_photons(mg, PONI, flux_ph_s=1e11, exposure_s=1.0, beamstop=Beamstop()), spec


@pytest.mark.parametrize("split, honest", [("no", True), ("bbox", False)])
def test_fit_uncertainties_on_integrated_frames(mg_expected, split, honest):
    """100 Poisson realisations of a frame, integrated (6000 bins) and fitted: the pulls of
    the centre and FWHM about the fit of the noiseless frame have a standard deviation
    in 0.8-1.2 without pixel splitting; with bounding-box splitting (a pixel shared by
    neighbouring bins, whose errors are then correlated) they are clearly above 1.2."""
    expected, spec = mg_expected
    integrator = CorrectedIntegrator(PONI, npt=6000, unit="2th_deg", radial_range=(0.5, 30.0), split=split)
    kw = dict(model="pseudo-voigt")

    def fit(frame):
        pattern = integrator.integrate(frame)
        return fit_peak(pattern.radial, pattern.intensity, spec.window_deg, sigma=pattern.sigma, **kw)

    truth = fit(expected)
    rng = np.random.default_rng(11)
    fits = [fit(rng.poisson(expected).astype(np.float64)) for _ in range(100)]
    assert all(f.success for f in fits)
    pulls_c = np.array([(f.centre - truth.centre) / f.centre_sigma for f in fits])
    pulls_w = np.array([(f.fwhm - truth.fwhm) / f.fwhm_sigma for f in fits])
    if honest:
        assert 0.8 < np.std(pulls_c) < 1.2 and 0.8 < np.std(pulls_w) < 1.2, (np.std(pulls_c), np.std(pulls_w))
        assert abs(np.mean(pulls_c)) < 0.3
    else:
        assert np.std(pulls_c) > 1.3, np.std(pulls_c)


def test_automatic_peaks_are_the_strongest_rings(mg_expected):
    """On Mg, the 3 most prominent peaks found automatically are (100), (002), (101),
    each window holding its ring and no other."""
    expected, _ = mg_expected
    pattern = CorrectedIntegrator(PONI, npt=6000, unit="2th_deg", radial_range=(0.5, 30.0), split="no") \
        .integrate(np.random.default_rng(1).poisson(expected).astype(np.float64))
    specs = find_peak_specs(pattern.radial, pattern.intensity, pattern.sigma, 3)
    known = configured_specs({"phase": "Mg", "hkl": [[1, 0, 0], [0, 0, 2], [1, 0, 1]]}, PONI.wavelength)
    assert [s.label for s in specs] == ["peak0", "peak1", "peak2"]
    for found, ring in zip(specs, known):
        centre = np.mean(ring.window_deg)
        assert found.window_deg[0] < centre < found.window_deg[1]
        assert found.window_deg[1] - found.window_deg[0] < 0.6
    assert find_peak_specs(pattern.radial, np.full_like(pattern.intensity, 5.0), pattern.sigma, 3) == []


def test_directional_strain_recovers_both_directions():
    """Synthetic sector strains eps_L cos^2 + eps_T sin^2 with noise: both recovered
    within their errors; too few sectors is a flagged failure, not a number."""
    rng = np.random.default_rng(2)
    chi = np.radians(np.arange(-175, 180, 10))
    c2 = sector_cos2(np.cos(2 * chi), np.sin(2 * chi), 30.0)
    sigma = np.full(chi.size, 2e-5)
    strain = 3e-3 * c2 - 0.9e-3 * (1 - c2) + rng.normal(0, 2e-5, chi.size)
    result = directional_strain(c2, strain, sigma)
    assert result.success
    assert abs(result.loading - 3e-3) < 3 * result.loading_sigma
    assert abs(result.transverse + 0.9e-3) < 3 * result.transverse_sigma
    assert 0.5 < result.reduced_chi2 < 2
    few = directional_strain(c2[:3], strain[:3], sigma[:3])
    assert not few.success and "3 usable sectors" in few.reason and math.isnan(few.loading)
