"""Corrected integration, stitching and absolute scale against pyFAI and the simulator's truth."""

import numpy as np
import pytest
from pyFAI.multi_geometry import MultiGeometry

from xrd_bluesky.errors import (
    GeometryError,
    MissingMetadataError,
    MonitorError,
    ShapeMismatchError,
)
from xrd_bluesky.science.detector_pixels import pixel_geometry
from xrd_bluesky.science.geometry import StagePosition
from xrd_bluesky.science.reduction.absolute_scale import (
    Exposure,
    absolute,
    standard_factor,
    subtract,
)
from xrd_bluesky.science.reduction.corrected_integration import CorrectedIntegrator
from xrd_bluesky.science.reduction.monitors import AIR_TRANSMISSION, FluxCalibration
from xrd_bluesky.science.reduction.multi_geometry import covered_radial_range, stitch
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.sim.samples import solute_cross_section
from xrd_bluesky.science.units import wavelength_m
from xrd_bluesky.sim_devices.beamline import BeamlineConfig

DET = "Pilatus1M"
CONFIG = BeamlineConfig(detector=DET, seed=3)
POSITIONS = [StagePosition(0, 0, 300), StagePosition(60, -40, 260), StagePosition(-50, 60, 340)]
CSR = ("bbox", "csr", "cython")
FLUX, EXPOSURE_S = 1e11, 1.0


@pytest.fixture(scope="module")
def response():
    return DetectorResponse.simulate(DET, 11, pixel_rms=CONFIG.gain_pixel_rms, module_rms=CONFIG.gain_module_rms)


@pytest.fixture(scope="module")
def ponis():
    model = CONFIG.true_geometry().with_wavelength(wavelength_m(17.0))
    return [model.poni_at(p) for p in POSITIONS]


def measure(sample_name, poni, response, seed, flux=FLUX):
    """A frame of ``sample_name`` and its matching ion-chamber counts."""
    rng = np.random.default_rng(seed)
    sample = default_library()[sample_name]
    photons = expected_photons(sample, poni, flux_ph_s=flux, exposure_s=EXPOSURE_S, beamstop=CONFIG.beamstop)
    frame = detect(photons, response, EXPOSURE_S, rng)
    i0 = rng.poisson(FluxCalibration().rate(flux) * EXPOSURE_S)
    it = rng.poisson(FluxCalibration().rate(flux) * EXPOSURE_S * AIR_TRANSMISSION * sample.transmission(17.0))
    return frame, Exposure(float(i0), float(it), EXPOSURE_S, sample.thickness_mm)


def static_mask(poni):
    return CONFIG.beamstop.shadow(pixel_geometry(poni), margin_mm=0.5)


def test_1d_equals_pyfai_with_all_corrections(ponis, response):
    """Dark, gain, mask (gaps, beamstop, saturated and negative pixels of the frame),
    polarization and absolute solid angle: intensity and Poisson sigma equal pyFAI's
    CSR integrate1d within 1e-6 (float32 weights, double sums in both)."""
    poni = ponis[1]
    frame, _ = measure("glass", poni, response, 1)
    frame[100, 100:110] = response.max_count  # saturated
    frame[300, 50] = -3                       # nonsense
    dark = response.dark_rate() * EXPOSURE_S
    ours = CorrectedIntegrator(poni, npt=2000, mask=static_mask(poni), gain=response.gain, dark=dark,
                               max_count=response.max_count).integrate(frame)
    ai = poni.integrator()
    mask = ai.detector.mask.astype(bool) | static_mask(poni) | (frame < 0) | (frame >= response.max_count)
    ref = ai.integrate1d_ng(frame, 2000, unit="q_nm^-1", method=CSR, dark=dark, flat=response.gain, mask=mask,
                            polarization_factor=0.99, error_model="poisson",
                            normalization_factor=ai.pixel1 * ai.pixel2 / ai.dist**2)
    valid = ref.count > 0
    assert valid.sum() > 1900
    np.testing.assert_allclose(ours.radial, ref.radial, rtol=1e-12)
    np.testing.assert_allclose(ours.intensity[valid], ref.intensity[valid], rtol=1e-6)
    np.testing.assert_allclose(ours.sigma[valid], ref.sigma[valid], rtol=1e-6)
    assert np.isnan(ours.intensity[~valid]).all()


def test_runs_of_one_geometry_share_its_splitting_whatever_their_dark(ponis, response, monkeypatch):
    """Two runs at one position, each with a dark of its own (as every run records):
    the second builds no splitting matrix of its own (the costly part of preparing a
    position), holds only its own corrections in the cache, and integrates as pyFAI
    does with its own dark."""
    from xrd_bluesky.science.reduction import corrected_integration

    poni = ponis[0]
    built = []
    real = corrected_integration.pixel_splitting
    monkeypatch.setattr(corrected_integration, "pixel_splitting", lambda *a, **k: built.append(1) or real(*a, **k))
    corrected_integration.clear_splitting_cache()
    frame, _ = measure("glass", poni, response, 2)
    darks = [response.dark_rate() * EXPOSURE_S + offset for offset in (0.0, 0.5)]
    first = CorrectedIntegrator(poni, npt=2000, mask=static_mask(poni), gain=response.gain, dark=darks[0])
    one_run = corrected_integration.splitting_cache_bytes()
    second = CorrectedIntegrator(poni, npt=2000, mask=static_mask(poni), gain=response.gain, dark=darks[1])
    assert len(built) == 1
    splitting = corrected_integration._cached(second._key[0])
    # the second run's corrections are all it adds: as much as the first run's own
    assert corrected_integration.splitting_cache_bytes() - one_run == one_run - splitting.nbytes
    ai = poni.integrator()
    mask = ai.detector.mask.astype(bool) | static_mask(poni) | (frame < 0)
    for integrator, dark in zip((first, second), darks):
        ours = integrator.integrate(frame)
        ref = ai.integrate1d_ng(frame, 2000, unit="q_nm^-1", method=CSR, dark=dark, flat=response.gain, mask=mask,
                                polarization_factor=0.99, error_model="poisson",
                                normalization_factor=ai.pixel1 * ai.pixel2 / ai.dist**2)
        valid = ref.count > 0
        np.testing.assert_allclose(ours.intensity[valid], ref.intensity[valid], rtol=1e-6)
    assert len(built) == 1


def test_cake_equals_pyfai(ponis, response):
    """The (azimuth, q) cake: intensity and sigma equal pyFAI's CSR integrate2d with the
    same Poisson variance max(raw, 1) (pyFAI's 2D engine otherwise adds the dark to
    it, its 1D engine does not)."""
    poni = ponis[0]
    frame, _ = measure("glass", poni, response, 2)
    dark = response.dark_rate() * EXPOSURE_S
    ours = CorrectedIntegrator(poni, npt=300, npt_azim=36, mask=static_mask(poni), gain=response.gain,
                               dark=dark).integrate(frame)
    ai = poni.integrator()
    mask = ai.detector.mask.astype(bool) | static_mask(poni) | (frame < 0)
    ref = ai.integrate2d_ng(frame, 300, 36, unit="q_nm^-1", method=CSR, dark=dark, flat=response.gain, mask=mask,
                            polarization_factor=0.99, variance=np.maximum(frame, 1.0),
                            normalization_factor=ai.pixel1 * ai.pixel2 / ai.dist**2)
    assert ours.intensity.shape == ref.intensity.shape == (36, 300)
    valid = ref.count > 0
    np.testing.assert_allclose(ours.azimuthal, ref.azimuthal, rtol=1e-12)
    np.testing.assert_allclose(ours.intensity[valid], ref.intensity[valid], rtol=1e-6)
    np.testing.assert_allclose(ours.sigma[valid], ref.sigma[valid], rtol=1e-6)
    assert np.isnan(ours.intensity[~valid]).all()


def test_stitching_equals_pyfai_multigeometry(ponis, response):
    """Three positions in common bins: equal to pyFAI's MultiGeometry (CSR, absolute
    solid angle, same masks, gains and variances) within 1e-6, and the stitched q
    range covers more than any single position."""
    frames = [measure("glass", p, response, 10 + i)[0] for i, p in enumerate(ponis)]
    q_range = covered_radial_range(ponis)
    masks = [p.integrator().detector.mask.astype(bool) | static_mask(p) | (f < 0) for p, f in zip(ponis, frames)]
    ours = stitch(CorrectedIntegrator(p, npt=1500, radial_range=q_range, mask=static_mask(p), gain=response.gain)
                  .sums(f) for p, f in zip(ponis, frames)).result()
    mg = MultiGeometry([p.integrator() for p in ponis], unit="q_nm^-1", radial_range=q_range,
                       azimuth_range=(-180, 180), threadpoolsize=0)
    ref = mg.integrate1d([f.astype(np.float32) for f in frames], 1500, lst_mask=masks, lst_flat=response.gain,
                         polarization_factor=0.99, lst_variance=[np.maximum(f, 1.0) for f in frames], method=CSR)
    valid = ref.count > 0
    np.testing.assert_allclose(ours.intensity[valid], ref.intensity[valid], rtol=1e-6)
    np.testing.assert_allclose(ours.sigma[valid], ref.sigma[valid], rtol=1e-6)
    # the centred position reaches 35 1/nm, the stitched pattern has data to 53 1/nm
    reach = covered_radial_range([ponis[0]])[1]
    beyond = ours.radial > reach
    assert ours.radial[beyond][np.isfinite(ours.intensity[beyond])].max() > 1.4 * reach


def binned_truth(sample_name, pattern):
    """The sample's dSigma/dOmega (1/cm/sr) averaged over each q bin."""
    sample = default_library()[sample_name]
    edges_q = np.concatenate([[pattern.radial[0] - (pattern.radial[1] - pattern.radial[0]) / 2],
                              (pattern.radial[1:] + pattern.radial[:-1]) / 2,
                              [pattern.radial[-1] + (pattern.radial[-1] - pattern.radial[-2]) / 2]])
    fine = np.linspace(edges_q[0], edges_q[-1], 40 * len(pattern.radial))
    values = sample.cross_section_q(fine)
    return np.array([values[(fine >= a) & (fine < b)].mean() for a, b in zip(edges_q[:-1], edges_q[1:])])


@pytest.fixture(scope="module")
def stitched(ponis, response):
    """Sample in buffer, and buffer, stitched from three positions on the absolute scale
    (the detector's true gain as flat field: the gain map's own accuracy is tested apart)."""
    dark = response.dark_rate() * EXPOSURE_S
    q_range = covered_radial_range(ponis)
    integrators = [CorrectedIntegrator(p, npt=600, radial_range=q_range, mask=static_mask(p), gain=response.gain,
                                       dark=dark, max_count=response.max_count) for p in ponis]
    out = {}
    for k, name in enumerate(("sample_in_buffer", "buffer", "water")):
        parts = []
        for i, (poni, integrator) in enumerate(zip(ponis, integrators)):
            frame, exposure = measure(name, poni, response, 100 * k + i)
            parts.append(absolute(integrator.sums(frame), exposure))
        out[name] = stitch(parts).result()
    return out


def test_absolute_scale_recovers_known_cross_section(stitched, ponis):
    """Stitched on the absolute scale, the sample in buffer equals its true
    dSigma/dOmega within 2 % over its q range (every bin whose own statistical error is
    below 0.5 %, so that 2 % is a systematic error: 1.1-50 1/nm here); the pulls
    against the truth have unit spread, so there are no steps at the position
    boundaries beyond noise."""
    pattern = stitched["sample_in_buffer"]
    truth = binned_truth("sample_in_buffer", pattern)
    ok = np.isfinite(pattern.intensity)
    assert ok.sum() > 550
    precise = ok & (pattern.sigma < 0.005 * pattern.intensity)
    assert np.ptp(pattern.radial[precise]) > 40.0
    rel = pattern.intensity[precise] / truth[precise] - 1
    assert np.abs(rel).max() < 0.02, np.abs(rel).max()
    pulls = (pattern.intensity[ok] - truth[ok]) / pattern.sigma[ok]
    assert 0.8 < pulls.std() < 1.3, pulls.std()
    assert abs(pulls.mean()) < 0.3


def test_water_low_q_plateau(stitched):
    """Water's 0.0163 1/cm/sr (low-q plateau) recovered within 2 %; as a secondary
    standard its factor is 1 within 2 % and flat."""
    water = stitched["water"]
    low = (water.radial < 5.0) & np.isfinite(water.intensity)
    assert low.sum() > 10
    assert abs(np.average(water.intensity[low], weights=water.sigma[low] ** -2) / 0.0163 - 1) < 0.02
    factor = standard_factor(water, np.array([0.0, 5.0]), np.array([0.0163, 0.0163]), (0.0, 5.0))
    assert abs(factor.factor - 1) < 0.02 and factor.high - factor.low < 0.1


def test_buffer_subtraction_leaves_the_solute(stitched):
    """Sample in buffer minus buffer (same thickness) is the solute's excess
    scattering: within 3 sigma-weighted percent where it is above 10 % of the buffer."""
    diff = subtract(stitched["sample_in_buffer"], stitched["buffer"])
    truth = solute_cross_section(diff.radial)
    strong = np.isfinite(diff.intensity) & (truth > 0.1 * 0.0163)
    assert strong.sum() >= 10
    pulls = (diff.intensity[strong] - truth[strong]) / diff.sigma[strong]
    assert abs(pulls.mean()) < 0.5 and pulls.std() < 1.5


@pytest.mark.parametrize("i0, it, exposure_s, thickness_mm, error, culprit", [
    (0.0, 1e5, 1.0, 1.0, MonitorError, "I0=0.0"),
    (np.nan, 1e5, 1.0, 1.0, MonitorError, "I0=nan"),
    (-5.0, 1e5, 1.0, 1.0, MonitorError, "I0=-5.0"),
    (1e6, 0.0, 1.0, 1.0, MonitorError, "It=0.0"),
    (1e6, 2e6, 1.0, 1.0, MonitorError, "transmission"),
    (1e6, 5e5, 0.0, 1.0, MonitorError, "exposure"),
    (1e6, 5e5, 1.0, None, MissingMetadataError, "thickness"),
    (1e6, 5e5, 1.0, -1.0, MissingMetadataError, "thickness"),
    (100.0, 50.0, 1.0, 1.0, MonitorError, "flux"),
])
def test_bad_monitors_refused(i0, it, exposure_s, thickness_mm, error, culprit):
    with pytest.raises(error, match=culprit):
        Exposure(i0, it, exposure_s, thickness_mm).factor()


def test_empty_or_reversed_range_and_wrong_shape(ponis):
    with pytest.raises(GeometryError, match="empty or reversed"):
        CorrectedIntegrator(ponis[0], npt=100, radial_range=(10.0, 2.0))
    with pytest.raises(GeometryError, match="empty or reversed"):
        CorrectedIntegrator(ponis[0], npt=100, radial_range=(3.0, 3.0))
    integrator = CorrectedIntegrator(ponis[0], npt=100)
    with pytest.raises(ShapeMismatchError, match="shape"):
        integrator.sums(np.zeros((10, 10)))
    with pytest.raises(ShapeMismatchError, match="gain"):
        CorrectedIntegrator(ponis[0], npt=100, gain=np.ones((5, 5)))


def test_nan_pixels_are_masked_not_zeroed(ponis, response):
    """NaN pixels in a float frame leave the sums like masked pixels do."""
    poni = ponis[0]
    frame, _ = measure("glass", poni, response, 5)
    as_float = frame.astype(np.float32)
    as_float[400:420, :] = np.nan
    mask = static_mask(poni)
    mask[400:420, :] = True
    integrator = CorrectedIntegrator(poni, npt=500, mask=static_mask(poni))
    masked = CorrectedIntegrator(poni, npt=500, mask=mask)
    a, b = integrator.integrate(as_float), masked.integrate(frame)
    np.testing.assert_allclose(a.intensity, b.intensity, rtol=1e-9)


def test_multi_frame_sum_marks_pixels_bad_in_any_frame():
    """Summing an event's frames: the plain sum, except pixels saturated or negative
    in any frame, which become -1 (invalid for the integration kernel)."""
    from xrd_bluesky.science.reduction.integration_kernel import sum_frames

    frames = np.random.default_rng(0).poisson(20, (5, 40, 30)).astype(np.int32)
    frames[2, 3, 4] = 1000   # saturated (max_count 1000)
    frames[4, 10, 11] = -1   # gap / nonsense
    out = np.empty((40, 30))
    sum_frames(frames, 1000.0, out)
    expected = frames.sum(axis=0).astype(float)
    expected[3, 4] = expected[10, 11] = -1
    np.testing.assert_array_equal(out, expected)
