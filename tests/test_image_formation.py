"""Physics of the simulated frames: ring positions, photon statistics, beamstop."""

import numpy as np
import pyFAI.calibrant
import pytest

from xrd_bluesky.errors import ShapeMismatchError
from xrd_bluesky.science.detector_pixels import Beamstop, pixel_geometry
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction.integration import invalid_pixels
from xrd_bluesky.science.reduction.peak_fitting import fit_peak
from xrd_bluesky.science.reduction.single_frame import integrate_1d
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.units import wavelength_m

DET = "Pilatus1M"


@pytest.fixture(scope="module")
def tilted_poni():
    return Poni(0.25, 0.09, 0.08, rot1=0.02, rot2=-0.015, wavelength=wavelength_m(17.0), detector=DET)


def test_rings_at_calibrant_two_theta(tilted_poni):
    """Rings of a simulated CeO2 frame (tilted detector) sit at pyFAI's CeO2 2theta
    within 0.01 deg: 2theta from pyFAI's calibrant file, not from our crystal model."""
    rng = np.random.default_rng(1)
    response = DetectorResponse.simulate(DET, 1)
    sample = default_library()["CeO2"]
    frame = detect(expected_photons(sample, tilted_poni, flux_ph_s=1e11, exposure_s=1.0, beamstop=Beamstop()),
                   response, 1.0, rng)
    shadow = Beamstop().shadow(pixel_geometry(tilted_poni), margin_mm=0.5)
    pattern = integrate_1d(frame, tilted_poni, npt=3000, unit="2th_deg",
                           mask=invalid_pixels(frame, tilted_poni, response.max_count, shadow))
    calibrant = pyFAI.calibrant.get_calibrant("CeO2")
    calibrant.wavelength = tilted_poni.wavelength
    truth = np.degrees(calibrant.get_2th())
    truth = truth[truth < np.nanmax(pattern.radial) - 0.2][:6]
    assert len(truth) >= 5
    for t in truth:
        fit = fit_peak(pattern.radial, pattern.intensity, (t - 0.12, t + 0.12), sigma=pattern.sigma,
                       background="linear")
        assert fit.success, fit.reason
        assert abs(fit.centre - t) < 0.01


@pytest.mark.parametrize("lam", [0.7, 25.0, 3000.0])
def test_flat_illumination_photon_statistics(lam):
    """Unit gain, no dark, no read noise: counts are Poisson (mean = variance = lambda).
    ~1e6 pixels: 6-sigma bounds on the mean and on the variance estimate."""
    response = DetectorResponse.simulate(DET, 2, pixel_rms=0.0, module_rms=0.0, n_dead=0,
                                         n_damaged=0, n_hot=0, dark_rate_counts_s=0.0,
                                         read_noise_counts=0.0)
    frame = detect(np.full(response.shape, lam, np.float32), response, 1.0, np.random.default_rng(3))
    good = frame[~response.gaps].astype(float)
    n = good.size
    assert abs(good.mean() - lam) < 6 * np.sqrt(lam / n)
    assert abs(good.var() / lam - 1) < 6 * np.sqrt(2.0 / n)


def test_dark_and_read_noise_add_their_variance():
    """Dark current d (counts/s) and read noise r add d to the mean and d + r^2 to the variance."""
    lam, dark, rn, t = 50.0, 4.0, 2.0, 1.5
    response = DetectorResponse.simulate(DET, 2, pixel_rms=0.0, module_rms=0.0, n_dead=0, n_damaged=0,
                                         n_hot=0, dark_rate_counts_s=dark, read_noise_counts=rn)
    frame = detect(np.full(response.shape, lam, np.float32), response, t, np.random.default_rng(4))
    good = frame[~response.gaps].astype(float)
    expected_var = lam + dark * t + rn**2 + 1.0 / 12  # + rounding to integer counts
    assert abs(good.mean() - (lam + dark * t)) < 6 * np.sqrt(expected_var / good.size)
    assert abs(good.var() / expected_var - 1) < 6 * np.sqrt(2.0 / good.size)


def test_gain_map_defects_and_saturation():
    """The true gain has the requested pixel RMS; dead pixels read 0, gaps -1, and
    counts are clipped at the 20-bit depth."""
    response = DetectorResponse.simulate(DET, 5, pixel_rms=0.03, module_rms=0.0, read_noise_counts=0.0,
                                         dark_rate_counts_s=0.0)
    normal = ~(response.gaps | response.dead | response.damaged)
    assert response.gain[normal].std() == pytest.approx(0.03, rel=0.05)
    frame = detect(np.full(response.shape, 1e7, np.float32), response, 1.0, np.random.default_rng(0))
    assert (frame[response.gaps] == -1).all()
    assert (frame[response.dead] == 0).all()
    assert frame.max() == 2**20 - 1


def test_beamstop_shadow_follows_the_detector(tilted_poni):
    """Moving the detector by 5 mm along dim2 moves the beamstop's disc shadow by
    5 mm / 172 um = 29 pixels."""
    from dataclasses import replace

    bs = Beamstop(arm_width_mm=0.0)
    def centre(poni):
        shadow = bs.shadow(pixel_geometry(poni))
        return np.argwhere(shadow).mean(axis=0)
    shift = centre(replace(tilted_poni, poni2=tilted_poni.poni2 - 0.005)) - centre(tilted_poni)
    assert shift[1] == pytest.approx(-0.005 / 172e-6, abs=0.5)
    assert abs(shift[0]) < 0.5


def test_wrong_shape_is_a_domain_error():
    response = DetectorResponse.simulate(DET, 0)
    with pytest.raises(ShapeMismatchError, match="Pilatus1M"):
        detect(np.zeros((10, 10), np.float32), response, 1.0, np.random.default_rng(0))
