"""The block kernel of the per-frame integration: exact sums of any sparse matrix, and
pyFAI's results (1D and cake) from simulated frames with every correction."""

import numpy as np
import pytest
import scipy.sparse

from xrd_bluesky.science.detector_pixels import pixel_geometry
from xrd_bluesky.science.geometry import StagePosition
from xrd_bluesky.science.reduction.corrected_integration import (
    CorrectedIntegrator,
    pixel_splitting,
)
from xrd_bluesky.science.reduction.integration_kernel import (
    BLOCK,
    balanced_ranges,
    block_sums,
    pixel_sums,
    to_blocks,
)
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.units import wavelength_m
from xrd_bluesky.sim_devices.beamline import BeamlineConfig

DET = "Pilatus1M"
CONFIG = BeamlineConfig(detector=DET, seed=5)
CSR = ("bbox", "csr", "cython")
MAX_COUNT = 500.0


def random_matrix(rng, n_bins, n_pixels):
    """Bins x pixels: most pixels on 1 to 5 consecutive bins (wider than a block), some
    on scattered bins, some on none, some at the last bins."""
    rows, cols = [], []
    for p in range(n_pixels):
        kind = rng.integers(5)
        if kind == 0:
            continue
        if kind == 1:
            bins = np.sort(rng.choice(n_bins, rng.integers(1, 9), replace=False))
        else:
            width = rng.integers(1, 6)
            bins = np.arange(rng.integers(n_bins - width + 1), n_bins)[:width]
        rows += list(bins)
        cols += [p] * len(bins)
    weights = rng.uniform(0.05, 1.0, len(rows)).astype(np.float32)
    return scipy.sparse.csc_matrix((weights, (rows, cols)), shape=(n_bins, n_pixels))


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32])
def test_block_sums_are_the_matrix_products(dtype):
    """Signal and variance sums over the frame's valid pixels, and the normalization,
    dark and count the invalid ones (negative, saturated, NaN) take away, equal the
    sparse products, for pixels on consecutive, scattered or no bins, in three ranges."""
    rng = np.random.default_rng(1)
    n_bins, n_pixels = 37, 3000
    m = random_matrix(rng, n_bins, n_pixels)
    m.sort_indices()
    blocks = to_blocks(m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data, n_bins)
    assert len(blocks[2]) > 0  # secondary blocks exercised
    bounds, extra_bounds = balanced_ranges(blocks[2], n_pixels, 3)
    frame = rng.poisson(30, n_pixels).astype(np.float64)
    frame[rng.choice(n_pixels, 200, replace=False)] = MAX_COUNT + rng.integers(0, 3, 200)
    frame[:7] = 0
    if dtype != np.uint16:
        frame[rng.choice(n_pixels, 200, replace=False)] = -1
    if dtype == np.float32:
        frame[rng.choice(n_pixels, 50, replace=False)] = np.nan
    frame = frame.astype(dtype)
    norm, dark = rng.uniform(0.5, 2, n_pixels), rng.uniform(0, 3, n_pixels)
    acc, lost = np.empty((3, 2 * (n_bins + BLOCK))), np.empty((n_bins + BLOCK, 3))
    bad, n_bad = np.empty(n_pixels, np.int32), np.empty(3, np.int64)
    block_sums(*blocks, bounds, extra_bounds, frame, MAX_COUNT, acc, bad, n_bad)
    pixel_sums(bad, n_bad, bounds, *blocks, norm, dark, lost)

    x = frame.astype(np.float64)
    valid = (x >= 0) & (x < MAX_COUNT)
    m64 = m.astype(np.float64)
    sums = acc.sum(axis=0).reshape(-1, 2)
    np.testing.assert_allclose(sums[:n_bins, 0], m64 @ np.where(valid, x, 0), rtol=1e-12)
    np.testing.assert_allclose(sums[:n_bins, 1], m64.multiply(m64) @ np.where(valid, np.maximum(x, 1), 0), rtol=1e-12)
    np.testing.assert_array_equal(sums[n_bins:], 0)
    for column, per_pixel in enumerate((norm, dark, np.ones(n_pixels))):
        np.testing.assert_allclose(lost[:n_bins, column], m64 @ np.where(valid, 0, per_pixel), rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def measured():
    """A Pilatus 1M frame of glass with its detector response and static mask, with a
    saturated run, negative pixels and a masked block."""
    response = DetectorResponse.simulate(DET, 7, pixel_rms=CONFIG.gain_pixel_rms, module_rms=CONFIG.gain_module_rms)
    poni = CONFIG.true_geometry().with_wavelength(wavelength_m(17.0)).poni_at(StagePosition(30, -20, 280))
    photons = expected_photons(default_library()["glass"], poni, flux_ph_s=1e11, exposure_s=1.0,
                               beamstop=CONFIG.beamstop)
    frame = detect(photons, response, 1.0, np.random.default_rng(4))
    frame[200, 300:340] = response.max_count
    frame[500:503, 600] = -7
    mask = CONFIG.beamstop.shadow(pixel_geometry(poni), margin_mm=0.5)
    mask[700:720, 100:180] = True
    return poni, response, frame, mask


def pyfai_reference(poni, response, frame, mask, npt, npt_azim=None):
    """pyFAI's CSR integration with the same corrections and Poisson variance max(raw, 1)."""
    ai = poni.integrator()
    full_mask = ai.detector.mask.astype(bool) | mask | (frame < 0) | (frame >= response.max_count)
    kw = dict(unit="q_nm^-1", method=CSR, dark=response.dark_rate(), flat=response.gain, mask=full_mask,
              polarization_factor=0.99, variance=np.maximum(frame, 1.0),
              normalization_factor=ai.pixel1 * ai.pixel2 / ai.dist**2)
    if npt_azim:
        return ai.integrate2d_ng(frame, npt, npt_azim, **kw)
    return ai.integrate1d_ng(frame, npt, **kw)


@pytest.mark.parametrize("npt, npt_azim", [(1500, None), (2500, 36)])
def test_kernel_agrees_with_pyfai(measured, npt, npt_azim):
    """1D and a cake whose pixels need secondary blocks (sector boundaries, more than
    BLOCK q bins): intensity and sigma within 1e-4 of pyFAI on every bin with a valid
    pixel, NaN on the others, and the same counts."""
    poni, response, frame, mask = measured
    integrator = CorrectedIntegrator(poni, npt=npt, npt_azim=npt_azim, mask=mask, gain=response.gain,
                                     dark=response.dark_rate(), max_count=response.max_count)
    ours = integrator.integrate(frame)
    ref = pyfai_reference(poni, response, frame, mask, npt, npt_azim)
    valid = ref.count > 0
    assert ours.intensity.shape == ref.intensity.shape and valid.mean() > 0.5
    np.testing.assert_allclose(ours.intensity[valid], ref.intensity[valid], rtol=1e-4)
    np.testing.assert_allclose(ours.sigma[valid], ref.sigma[valid], rtol=1e-4)
    np.testing.assert_allclose(ours.count, ref.count, rtol=1e-4, atol=1e-4)
    assert np.isnan(ours.intensity[~valid]).all()
    if npt_azim:
        detector_mask = poni.integrator().detector.mask.astype(bool) | mask
        assert len(pixel_splitting(poni, npt, npt_azim, "q_nm^-1", None, detector_mask).extra_pixel) > 0
