"""Stitching many positions of a detector on a 2theta arm: equal to pyFAI's MultiGeometry
and to a float64 evaluation of the same definition, in a cache bounded in bytes."""

import numpy as np
import pytest
from pyFAI.multi_geometry import MultiGeometry

from xrd_bluesky.errors import GeometryError
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction import corrected_integration
from xrd_bluesky.science.reduction.corrected_integration import CorrectedIntegrator
from xrd_bluesky.science.reduction.multi_geometry import covered_radial_range, stitch
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.units import wavelength_m
from xrd_bluesky_bench.stitch import arm_ponis, float64_stitch, reference_integrators

DET = "Pilatus300kw"  # 195 x 1475 px of 172 um
REFERENCE = Poni(dist=0.9, poni1=0.47 * 195 * 172e-6, poni2=0.53 * 1475 * 172e-6, rot1=0.012, rot2=-0.008,
                 wavelength=wavelength_m(17.0), detector=DET)
PONIS = arm_ponis(REFERENCE, 5.0 + 0.7 * np.arange(12))  # the 50-position scan's step: bins seen 3 times
NPT = 1000
CSR = ("bbox", "csr", "cython")
#: Ours vs pyFAI: pyFAI multiplies each pixel's flat x solid angle x polarization x
#: monitor in float32 (relative rounding up to ~2e-7 per pixel, partly averaging over
#: the hundreds of pixels of a bin: the benchmark measures <= 1e-7 on the normalization
#: and the intensities); signal and variance sums agree to float64 rounding.
RTOL_PYFAI = 1e-6
#: Ours vs the float64 evaluation: the same float64 products, summed in another order.
RTOL_FLOAT64 = 1e-12


@pytest.fixture(scope="module")
def measured():
    """Per position: a frame of glass (dark and gain applied, 1e11 ph/s for 1 s), its
    mask (the detector's gaps: a beamstop shadows nothing this far off the beam); the
    response's gain and dark."""
    response = DetectorResponse.simulate(DET, 5)
    dark = response.dark_rate() * 1.0
    rng = np.random.default_rng(8)
    frames = [detect(expected_photons(default_library()["glass"], p, flux_ph_s=1e11, exposure_s=1.0, beamstop=None),
                     response, 1.0, rng) for p in PONIS]
    masks = [p.detector_model().mask.astype(bool) for p in PONIS]
    return frames, masks, response.gain, dark


def ours(ponis, frames, masks, gain, dark, unit, radial_range):
    integrators = [CorrectedIntegrator(p, npt=NPT, unit=unit, radial_range=radial_range, mask=m, gain=gain, dark=dark)
                   for p, m in zip(ponis, masks)]
    return integrators, stitch(i.sums(f) for i, f in zip(integrators, frames)).result()


@pytest.mark.parametrize("unit, n", [("2th_deg", 12), ("q_A^-1", 6)])
def test_arm_stitch_equals_pyfai_multigeometry(measured, unit, n):
    """``n`` arm positions (from 5 deg, 0.7 deg apart) in common bins: intensity and
    sigma equal pyFAI's MultiGeometry (same corrections; it takes raw - dark and the
    raw counts' Poisson variance) within 1e-6 and the float64 evaluation within 1e-12,
    every bin filled."""
    frames, masks, gain, dark = measured
    ponis, frames, masks = PONIS[:n], frames[:n], masks[:n]
    radial_range = covered_radial_range(ponis, unit)
    _, mine = ours(ponis, frames, masks, gain, dark, unit, radial_range)
    mg = MultiGeometry(reference_integrators(ponis), unit=unit, radial_range=radial_range,
                       azimuth_range=(-180, 180), threadpoolsize=0)
    ref = mg.integrate1d([(f - dark).astype(np.float32) for f in frames], NPT, lst_mask=masks, lst_flat=gain,
                         polarization_factor=0.99, lst_variance=[np.maximum(f, 1.0).astype(np.float32) for f in frames],
                         method=CSR)
    exact_intensity, exact_sigma = float64_stitch(ponis, frames, masks, gain, dark, NPT, unit, radial_range)
    assert (ref.count > 0).all()
    np.testing.assert_allclose(mine.radial, ref.radial, rtol=1e-12)
    np.testing.assert_allclose(mine.intensity, ref.intensity, rtol=RTOL_PYFAI)
    np.testing.assert_allclose(mine.sigma, ref.sigma, rtol=RTOL_PYFAI)
    np.testing.assert_allclose(mine.intensity, exact_intensity, rtol=RTOL_FLOAT64)
    np.testing.assert_allclose(mine.sigma, exact_sigma, rtol=RTOL_FLOAT64)
    np.testing.assert_allclose(ref.intensity, exact_intensity, rtol=RTOL_PYFAI)


def test_cache_stays_within_its_bytes_and_evicted_positions_are_prepared_again(measured, monkeypatch):
    """With room for 2 of 6 positions, the cache never holds more than its bound; every
    integrator, its preparation long evicted, gives the same sums as with an unbounded
    cache; one whose gain array was changed meanwhile refuses."""
    frames, masks, gain, dark = measured
    ponis, frames, masks = PONIS[:6], frames[:6], masks[:6]
    radial_range = covered_radial_range(ponis, "2th_deg")
    corrected_integration.clear_splitting_cache()
    _, expected = ours(ponis, frames, masks, gain, dark, "2th_deg", radial_range)
    per_position = corrected_integration.splitting_cache_bytes() / len(ponis)
    bound = int(2.5 * per_position)
    monkeypatch.setattr(corrected_integration, "SPLITTING_CACHE_BYTES", bound)
    corrected_integration.clear_splitting_cache()
    integrators = []
    for p, m in zip(ponis, masks):
        integrators.append(CorrectedIntegrator(p, npt=NPT, unit="2th_deg", radial_range=radial_range, mask=m,
                                               gain=gain, dark=dark))
        assert corrected_integration.splitting_cache_bytes() <= bound
    assert corrected_integration.splitting_cache_bytes() > 1.5 * per_position  # 2 positions kept (sizes vary)
    sums = []
    for integrator, frame in zip(integrators, frames):  # the first 4 were evicted: prepared again
        sums.append(integrator.sums(frame))
        assert corrected_integration.splitting_cache_bytes() <= bound
    again = stitch(sums).result()
    np.testing.assert_array_equal(again.intensity, expected.intensity)
    np.testing.assert_array_equal(again.sigma, expected.sigma)
    changed = gain.copy()
    integrator = CorrectedIntegrator(ponis[0], npt=NPT, unit="2th_deg", radial_range=radial_range, mask=masks[0],
                                     gain=changed, dark=dark)
    changed[50, 50] *= 1.1
    corrected_integration.clear_splitting_cache()
    with pytest.raises(GeometryError, match="changed since"):
        integrator.sums(frames[0])
