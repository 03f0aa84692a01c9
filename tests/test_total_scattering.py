"""Total-scattering samples: their G(r) is the structure they claim, and S(Q), F(Q) and the
rendered frames follow from it."""

import math

import numpy as np
import pytest

from xrd_bluesky.science.detector_pixels import Beamstop, pixel_geometry
from xrd_bluesky.science.geometry import Poni, detector_model
from xrd_bluesky.science.reduction.single_frame import integrate_1d
from xrd_bluesky.science.scattering_factors import parse_composition
from xrd_bluesky.science.sim.image_formation import photons_per_incident_photon
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.sim.total_scattering import (
    A_SI_GROWTH_A,
    A_SI_PARENT_A_A,
    AVOGADRO,
    NICKEL_A_A,
    R_E2_CM2,
    SI_MOLAR_MASS_G_MOL,
    TotalScatteringSample,
)
from xrd_bluesky.science.units import wavelength_m


@pytest.fixture(scope="module")
def ni() -> TotalScatteringSample:
    return default_library()["Ni"]


@pytest.fixture(scope="module")
def a_si() -> TotalScatteringSample:
    return default_library()["a-Si"]


def lattice_shells(vectors: np.ndarray, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct lengths (A) of ``vectors`` (A) in (0, r_max] and how many vectors have each."""
    d = np.sqrt((vectors**2).sum(axis=1))
    d = d[(d > 0) & (d <= r_max)]
    return np.unique(np.round(d, 9), return_counts=True)


def test_nickel_shells_are_the_fcc_lattice(ni):
    """Shells up to 12 A equal a brute-force count of the fcc lattice vectors
    (a/2)(h, k, l), h + k + l even: distances a sqrt(m/2), neighbours 12, 6, 24, 12, 24, 8, ..."""
    h = np.arange(-8, 9)  # 8 a/2 = 14 A > 12 A
    hkl = np.stack(np.meshgrid(h, h, h, indexing="ij"), axis=-1).reshape(-1, 3)
    distances, counts = lattice_shells(NICKEL_A_A / 2 * hkl[hkl.sum(axis=1) % 2 == 0], 12.0)
    r, n = ni.pair_distances(12.0)
    np.testing.assert_allclose(r, distances, rtol=1e-9)
    np.testing.assert_array_equal(n, counts)
    assert n[:6].tolist() == [12, 6, 24, 12, 24, 8]
    np.testing.assert_allclose(r[:3], NICKEL_A_A * np.sqrt([0.5, 1.0, 1.5]), rtol=1e-12)


def test_amorphous_silicon_shells_are_the_diamond_network(a_si):
    """a-Si's shells up to 12 A are the diamond structure's (brute-force count of the
    vectors to both fcc sublattices: 4, 12, 12, 6, 12, 24, ...), every shell scaled by the
    site occupancy and those beyond the first by (1 - growth / r_k)."""
    h = np.arange(-10, 11)  # in units of a/4: 10 a/4 = 13.6 A > 12 A
    xyz = np.stack(np.meshgrid(h, h, h, indexing="ij"), axis=-1).reshape(-1, 3)
    even = (xyz % 2 == 0).all(axis=1) & (xyz.sum(axis=1) % 4 == 0)
    odd = (xyz % 2 == 1).all(axis=1) & (xyz.sum(axis=1) % 4 == 3)
    distances, counts = lattice_shells(A_SI_PARENT_A_A / 4 * xyz[even | odd], 12.0)
    r, n = a_si.pair_distances(12.0)
    np.testing.assert_allclose(r, distances, rtol=1e-9)
    occupancy = a_si.number_density_A3 * A_SI_PARENT_A_A**3 / 8
    weight = np.where(np.arange(len(r)) == 0, 1.0, 1.0 - A_SI_GROWTH_A / r)
    np.testing.assert_allclose(n, counts * occupancy * weight, rtol=1e-12)
    assert counts[:6].tolist() == [4, 12, 12, 6, 12, 24]


def test_nickel_coordination_numbers_from_the_rdf(ni):
    """Integrating R(r) = 4 pi r^2 rho(r) (divided by the crystallite envelope) over the first
    and second peaks, up to the midpoints between shells, gives 12 and 6 neighbours within
    1e-3: the midpoints are >= 4.6 widths from the centres, so the Gaussian tails moved
    across them amount to < 1e-4 neighbours (further out, shells 0.6 A apart and 0.09 A
    wide exchange up to 1e-2 neighbours)."""
    r_k, n_k = ni.pair_distances(6.0)
    edges = np.concatenate([[2.0], (r_k[:-1] + r_k[1:]) / 2])
    for k in range(2):
        r = np.linspace(edges[k], edges[k + 1], 20001)
        assert np.trapezoid(ni.radial_distribution(r) / ni.envelope(r), r) == pytest.approx(n_k[k], abs=1e-3)
    assert n_k[:2].tolist() == [12, 6]


def test_nickel_gr_peaks_at_the_pair_distances(ni):
    """Below 10 A every maximum of G(r) lies within 0.003 A of a shell distance
    sqrt(n/2) a, one maximum per shell (the baseline slope and the neighbours' tails shift
    a peak by sigma^2 G'/G'' < 0.003 A); the first peak, 12 neighbours at 2.4918 A of width
    0.075 A, is 12 / (r sigma sqrt(2 pi)) - 4 pi rho0 r high."""
    peaks = ni.true_peak_positions(10.0)
    r_k, _ = ni.pair_distances(10.0)
    assert len(peaks) == len(r_k)
    np.testing.assert_allclose(peaks, r_k, atol=3e-3)
    sigma1 = ni.shells.widths_A[0]
    assert 0.07 < sigma1 < 0.08
    height = 12 / (r_k[0] * sigma1 * math.sqrt(2 * math.pi)) - 4 * math.pi * ni.number_density_A3 * r_k[0]
    assert ni.true_gr(r_k[0]) / ni.envelope(r_k[0]) == pytest.approx(height, rel=1e-6)


@pytest.mark.parametrize("name", ["Ni", "a-Si"])
def test_low_r_gr_is_the_density_baseline(name):
    """Below 1.8 A G(r) = -4 pi rho0 r E(r) within 1e-5 (the nearest shell tails are >= 5
    widths away: a-Si's second shell is 0.39 A wide), and within 1.1 % of -4 pi rho0 r
    (Ni's crystallite envelope is 1 - 1.5 r / 250 A there)."""
    sample = default_library()[name]
    r = np.linspace(0.1, 1.8, 200)
    baseline = -4 * math.pi * sample.number_density_A3 * r
    np.testing.assert_allclose(sample.true_gr(r), baseline * sample.envelope(r), rtol=1e-5)
    np.testing.assert_allclose(sample.true_gr(r), baseline, rtol=0.011)


@pytest.mark.parametrize("name", ["Ni", "a-Si"])
def test_tabulated_f_is_the_sine_transform_of_g(name):
    """F(Q) of the table equals a direct trapezoid quadrature of int G(r) sin(Q r) dr on a
    4x finer grid (0.0025 A) within 1e-5 (1 + |F|) at Q below, on and above Ni's 111 peak
    and far out: both sums are converged to ~1e-8 for peaks 30 grid steps wide."""
    sample = default_library()[name]
    table = sample.tables()
    r = np.arange(0.0, sample.envelope_end_A + 0.0025, 0.0025)
    g = sample.true_gr(r)
    for q_target in (0.5, 2.0 * math.pi * math.sqrt(3) / NICKEL_A_A, 7.3, 25.0, 55.0):
        i = int(np.searchsorted(table.q_A, q_target))
        q, f = table.q_A[i], table.reduced_structure_function[i]
        assert np.trapezoid(g * np.sin(q * r), r) == pytest.approx(f, abs=1e-5 * (1 + abs(f)))


def test_back_transform_recovers_nickel_gr(ni):
    """(2/pi) int_0^60 F(Q) sin(Q r) dQ on the table's grid reproduces the true G(r) on
    1.5-20 A within 2e-3 (1e-4 of the first peak): beyond 60 1/A, F is damped by
    exp(-Q^2 sigma^2 / 2) < 4e-5."""
    table = ni.tables()
    keep = table.q_A <= 60.0
    q, f = table.q_A[keep], table.reduced_structure_function[keep]
    r = np.linspace(1.5, 20.0, 400)
    g = np.concatenate([np.trapezoid(f * np.sin(np.outer(chunk, q)), q, axis=1) for chunk in np.split(r, 8)])
    np.testing.assert_allclose(2 / math.pi * g, ni.true_gr(r), atol=2e-3)


def test_nickel_bragg_peaks(ni):
    """S(Q) peaks within 0.01 1/A of Q = 2 pi sqrt(h^2 + k^2 + l^2) / a for 111, 200, 220,
    311 and 222, each far above the diffuse level (S > 5)."""
    table = ni.tables()
    for hkl in ((1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2)):
        q0 = 2 * math.pi * math.sqrt(sum(i * i for i in hkl)) / NICKEL_A_A
        near = np.abs(table.q_A - q0) < 0.1
        assert table.q_A[near][np.argmax(table.structure_factor[near])] == pytest.approx(q0, abs=0.01)
        assert table.structure_factor[near].max() > 5


@pytest.mark.parametrize("name", ["Ni", "a-Si"])
def test_structure_factor_is_physical(name):
    """S(Q) >= 0 on the whole table (0-100 1/A), tends to 1 at high Q (|S - 1| < 1e-3
    from 50 1/A, where the first shell's exp(-Q^2 sigma^2 / 2) < 1e-3) and a solid
    scatters little forward (S(0) < 0.3)."""
    sample = default_library()[name]
    table = sample.tables()
    assert table.structure_factor.min() >= 0
    assert np.abs(table.structure_factor[table.q_A >= 50] - 1).max() < 1e-3
    assert 0 <= table.structure_factor[0] < 0.3
    np.testing.assert_allclose(sample.structure_factor(table.q_A[1:]),
                               1 + table.reduced_structure_function[1:] / table.q_A[1:], rtol=1e-12)


def test_cross_section_weighting(ni):
    """dSigma/dOmega = n r_e^2 [<f^2> + <f>^2 (S - 1) + <S_inc>] with n = packing x rho0
    (table points, exact), which at high Q (60-70 1/A) is n r_e^2 (<f^2> + <S_inc>) within
    1e-4."""
    comp = parse_composition("Ni")
    n = 0.5 * ni.number_density_A3 * 1e24
    assert ni.atoms_per_cm3 == pytest.approx(n, rel=1e-12)
    q = ni.tables().q_A[::997]
    f, f2 = comp.mean_form_factors(q)
    expected = n * R_E2_CM2 * (f2 + f**2 * (ni.structure_factor(q) - 1) + comp.incoherent(q))
    np.testing.assert_allclose(ni.cross_section_q(q), expected, rtol=1e-12)
    high = np.linspace(60.0, 70.0, 101)
    f, f2 = comp.mean_form_factors(high)
    np.testing.assert_allclose(ni.cross_section_q(high), n * R_E2_CM2 * (f2 + comp.incoherent(high)), rtol=1e-4)


def test_amorphous_silicon_structure(a_si):
    """a-Si: 2.28 g/cm^3 (packed at 50 % in the capillary); 4 bonds x the site occupancy
    (3.92) in the first RDF peak (to 2.6 A, 3.6 widths: the broad second shell's tail adds
    < 0.01); G(r) oscillates by < 2 % of the first peak beyond 15 A (decay
    exp(-Q1^2 growth r / 2)); S(Q)'s first peak at 2.0 +- 0.1 1/A as measured for a-Si."""
    assert a_si.number_density_A3 * SI_MOLAR_MASS_G_MOL / AVOGADRO * 1e24 == pytest.approx(2.28, rel=1e-12)
    assert a_si.material.density_g_cm3 == pytest.approx(2.28 * 0.5, rel=1e-12)
    r = np.linspace(2.0, 2.6, 20001)
    occupancy = a_si.number_density_A3 * A_SI_PARENT_A_A**3 / 8
    assert np.trapezoid(a_si.radial_distribution(r), r) == pytest.approx(4 * occupancy, abs=0.02)
    r = np.arange(0.01, 40.0, 0.005)
    g = a_si.true_gr(r)
    assert np.abs(g[r > 15]).max() < 0.02 * g.max()
    table = a_si.tables()
    low = (table.q_A > 1.0) & (table.q_A < 3.0)
    assert table.q_A[low][np.argmax(table.structure_factor[low])] == pytest.approx(2.0, abs=0.1)


def test_rendered_frames_carry_the_cross_section():
    """End to end at 100 keV (Pilatus300k, 0.1 m, beam centred): the integrated a-Si frame
    (per steradian), divided by thickness x transmission, is the sample's
    dSigma/dOmega within 0.3 % from 8 1/A on (below, pixels 0.08 1/A wide smear the first
    peaks); Ni's 111, 200 and 220 Bragg peaks fall in the bins of their Q within 0.01 1/A."""
    det = detector_model("Pilatus300k")
    dist = 0.1
    poni = Poni(dist, det.shape[0] * det.pixel1 / 2, det.shape[1] * det.pixel2 / 2, wavelength=wavelength_m(100.0),
                detector="Pilatus300k")
    shadow = Beamstop().shadow(pixel_geometry(poni), margin_mm=0.5)
    library = default_library()
    patterns = {}
    for name in ("a-Si", "Ni"):
        sample = library[name]
        image = np.array(photons_per_incident_photon(sample, poni, Beamstop()))
        pattern = integrate_1d(image, poni, npt=2000, unit="q_A^-1", mask=shadow)
        per_sr = sample.thickness_mm * 0.1 * sample.transmission(100.0)
        patterns[name] = (pattern.radial, pattern.intensity / per_sr)
    q, xs = patterns["a-Si"]
    far = np.isfinite(xs) & (q >= 8.0)
    assert q[far].max() > 25
    np.testing.assert_allclose(xs[far], library["a-Si"].cross_section_q(q[far]), rtol=3e-3)
    q, xs = patterns["Ni"]
    for hkl in ((1, 1, 1), (2, 0, 0), (2, 2, 0)):
        q0 = 2 * math.pi * math.sqrt(sum(i * i for i in hkl)) / NICKEL_A_A
        near = np.isfinite(xs) & (np.abs(q - q0) < 0.15)
        assert q[near][np.argmax(xs[near])] == pytest.approx(q0, abs=0.01)
