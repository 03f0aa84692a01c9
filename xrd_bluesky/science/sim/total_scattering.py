"""Total-scattering samples whose pair distribution function is known exactly.

A :class:`TotalScatteringSample` is *defined* by its reduced pair distribution function
G(r) (1/A^2); the structure factor and the cross-section the simulator renders are
computed from it, so the G(r) a PDF reduction should recover is exact by construction.

**Pair shells.** Around an atom, ``n_k`` neighbours (mean per atom) sit at distance
``r_k`` (A); the pair's relative displacement is an isotropic Gaussian of standard
deviation ``sigma_k`` (A) per Cartesian component. The exact radial distribution of
such a pair is ``(r / r_k) [N(r; r_k, sigma_k) - N(r; -r_k, sigma_k)]`` (N a normalised
Gaussian; its integral over r > 0 is exactly 1), so with number density ``rho0``
(atoms/A^3) and an envelope ``E(r)``::

    R(r) = 4 pi r^2 rho(r) = E(r) sum_k n_k (r / r_k) [N(r; r_k, sigma_k) - N(r; -r_k, sigma_k)]
    G(r) = 4 pi r (rho(r) - rho0 E(r))
         = E(r) [sum_k (n_k / r_k) (N(r; r_k, sigma_k) - N(r; -r_k, sigma_k)) - 4 pi rho0 r]

Each shell is a Gaussian peak of G centred exactly on ``r_k`` (std ``sigma_k``); its
sine transform is ``(n_k / r_k) sin(Q r_k) exp(-Q^2 sigma_k^2 / 2)`` (the Debye formula
with a pair Debye-Waller factor). The one-dimensional convention ``n_k N(r; r_k, sigma_k)
/ r`` misses the 2 sigma_k^2 of perpendicular motion in the peak's second moment; summed
over the ~10^6 pairs of a crystallite this leaves S(0) near 1 instead of near 0 and a
spurious small-angle term, so it is not used.

**Envelope.** ``E`` is the characteristic function of a sphere of diameter D (a
crystallite: ``1 - 1.5 x + 0.5 x^3``, x = r / D <= 1, 0 beyond; its peaks and the
baseline ``-4 pi rho0 r E(r)`` both vanish beyond D), or, for a glass whose correlations
have died out, a smooth (C^2) cut-off from 1 to 0 between two radii where G is already
negligible.

**Structure factor.** ``F(Q) = Q (S(Q) - 1) = int_0^inf G(r) sin(Q r) dr`` is computed
once per structure by a type-I discrete sine transform of G sampled every
:data:`TRANSFORM_R_STEP_A` on ``[0, L dr]`` (G is zero beyond the envelope), which gives F
every ``pi / (L dr)`` <= :data:`TABLE_Q_STEP_MAX_A` in Q; ``S(0) = 1 + int G r dr``.
The sum is far more accurate than the 0.01 A step suggests (a test checks it against
a 4x finer quadrature to 1e-5): G vanishes at r = 0 and beyond the envelope, its
Gaussian peaks (>= 7 grid steps wide) alias by ``exp(-(2 pi / dr - Q)^2 sigma^2 / 2)``
(< 1e-100 for Q <= 100 1/A), and the baseline's jumps of the second derivative (at
r = 0 and at the envelope's end) by ~ ``4 pi rho0 / (D (2 pi / dr)^3)`` (< 1e-10).

**Cross-section.** For N atoms of mean form factor ``<f>``, ``<f^2>`` and incoherent
scattering function ``<S_inc>`` (from :mod:`.scattering_factors`), at ``n`` atoms/cm^3::

    dSigma/dOmega(Q) = n r_e^2 [<f^2>(Q) + <f>(Q)^2 (S(Q) - 1) + <S_inc>(Q)]   (1/cm/sr)

with Q = 4 pi sin(theta) / lambda. This is the Faber-Ziman weighting a PDF reduction
assumes; it is exact only for a monatomic sample (for several elements each partial
G_ab carries its own f_a f_b / <f>^2, which varies with Q), so the library's samples are
monatomic and their G(r) is the true one, not an X-ray-weighted approximation.
Anomalous dispersion (f', f'' <= 0.05 electrons for Ni and Si at 60-100 keV) and the
Compton recoil (Breit-Dirac) factor are not modelled. ``n`` is the packing fraction of
the powder times ``rho0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.fft import dst

from ...errors import SampleError
from ..materials import Material
from ..pdf.pair_distribution import peak_positions
from ..scattering_factors import TABLE_Q_MAX, parse_composition
from .samples import Sample

#: Classical electron radius squared (cm^2): the Thomson cross-section per electron and sr.
R_E2_CM2 = 7.9407877e-26
#: r step (A) of the grid G(r) is sampled on for the sine transform.
TRANSFORM_R_STEP_A = 0.01
#: Largest Q step (1/A) of the tabulated F(Q) and S(Q).
TABLE_Q_STEP_MAX_A = 0.002
#: A shell's Gaussian is summed over this many standard deviations on either side (exp(-24.5) = 2e-11 beyond).
SHELL_HALF_WIDTH_SIGMAS = 7.0
#: Largest number of (shell, grid point) terms evaluated at once (bounds the memory of a G(r) evaluation).
CHUNK_TERMS = 1_000_000
#: Avogadro's number (1/mol) and the molar masses (g/mol) of the library's elements.
AVOGADRO = 6.02214076e23
NI_MOLAR_MASS_G_MOL = 58.6934
SI_MOLAR_MASS_G_MOL = 28.0855


@dataclass(frozen=True)
class PairShells:
    """Coordination shells of an average atom (tuples, so that samples stay hashable).

    Parameters
    ----------
    distances_A : tuple of float
        Shell radii r_k (A), increasing.
    neighbours : tuple of float
        Mean number of neighbours per atom in each shell, n_k.
    widths_A : tuple of float
        Standard deviation sigma_k (A) of each pair's relative displacement per
        Cartesian component: the std of the shell's Gaussian peak in G(r).
    """

    distances_A: tuple[float, ...]
    neighbours: tuple[float, ...]
    widths_A: tuple[float, ...]

    def __post_init__(self) -> None:
        r, n, s = self.arrays()
        if not (len(r) == len(n) == len(s)) or len(r) == 0:
            raise SampleError(f"pair shells need as many distances, neighbour numbers and widths (got {len(r)}, "
                              f"{len(n)}, {len(s)}), at least one each")
        if not (np.all(r > 0) and np.all(np.diff(r) > 0)):
            raise SampleError("pair-shell distances must be positive and increasing (A)")
        if not (np.all(n > 0) and np.all(s > 0) and np.all(np.isfinite(n)) and np.all(np.isfinite(s))):
            raise SampleError("pair-shell neighbour numbers and widths (A) must be positive and finite")

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """r_k (A), n_k, sigma_k (A) as float arrays."""
        return (np.asarray(self.distances_A, dtype=float), np.asarray(self.neighbours, dtype=float),
                np.asarray(self.widths_A, dtype=float))


def _three_square_counts(m_max: int, odd: bool) -> np.ndarray:
    """Number of integer vectors (x, y, z), all odd if ``odd``, with x^2 + y^2 + z^2 = m, for m <= m_max."""
    x = np.arange(0, math.isqrt(m_max) + 1)
    if odd:
        x = x[x % 2 == 1]
    squares = np.zeros(m_max + 1)
    squares[x**2] = np.where(x == 0, 1.0, 2.0)  # +x and -x
    result = squares
    for _ in range(2):  # convolve twice: sums of two, then three squares
        summed = np.zeros(m_max + 1)
        for s in x**2:
            summed[s:] += squares[s] * result[:m_max + 1 - s]
        result = summed
    return result


@lru_cache(maxsize=8)
def fcc_shells(a_A: float, r_max_A: float, u_iso_A2: float, delta2_A2: float) -> PairShells:
    """Shells of a face-centred cubic lattice (one atom per lattice point) up to ``r_max_A`` (A).

    The lattice vectors are (a/2)(h, k, l) with h + k + l even, i.e. with
    m = h^2 + k^2 + l^2 even: shell ``r = (a/2) sqrt(m) = a sqrt(m/2)`` holds as many
    neighbours as m has representations as a sum of three squares (12, 6, 24, 12, 24, 8, ...).

    Widths: uncorrelated atoms of isotropic displacement ``u_iso_A2`` (A^2) give a pair
    variance ``2 U`` per component; correlated motion of near neighbours narrows their
    peaks as in PDFfit's ``delta2`` model, ``sigma_k^2 = 2 U (1 - delta2 / r_k^2)``.

    Parameters
    ----------
    a_A : float
        Cubic lattice parameter (A).
    r_max_A : float
        Largest shell radius (A).
    u_iso_A2 : float
        Isotropic mean-square displacement U of an atom (A^2).
    delta2_A2 : float
        Correlated-motion parameter delta2 (A^2); must be below the first r_k^2 = a^2 / 2.
    """
    if not 0 <= delta2_A2 < a_A**2 / 2:
        raise SampleError(f"delta2 = {delta2_A2} A^2 must be >= 0 and below the first shell's "
                          f"r^2 = {a_A**2 / 2:.4g} A^2")
    m_max = int((2.0 * r_max_A / a_A) ** 2)
    counts = _three_square_counts(m_max, odd=False)
    m = np.arange(m_max + 1)
    keep = (m > 0) & (m % 2 == 0) & (counts > 0)
    r = a_A / 2.0 * np.sqrt(m[keep])
    sigma = np.sqrt(2.0 * u_iso_A2 * (1.0 - delta2_A2 / r**2))
    return PairShells(tuple(r.tolist()), tuple(counts[keep].tolist()), tuple(sigma.tolist()))


@lru_cache(maxsize=8)
def paracrystalline_diamond_shells(a_A: float, r_max_A: float, sigma1_A: float, growth_A: float,
                                   occupancy: float) -> PairShells:
    """Shells of a tetrahedral network: the diamond lattice's, broadened with distance.

    Distances and neighbour numbers are the diamond structure's (4 at a sqrt(3)/4,
    12 at a / sqrt(2), 12, 6, 12, 24, ...): in units of a/4, neighbours on the same fcc
    sublattice are (2h, 2k, 2l) with h + k + l even, i.e. m = h^2 + k^2 + l^2 with
    m = 0 mod 8; those on the other sublattice are the all-odd vectors with
    x + y + z = 1 mod 4, half of all all-odd representations of m (a sign flip maps
    1 mod 4 to 3 mod 4).

    Paracrystalline widths ``sigma_k^2 = sigma1^2 + growth (r_k - r_1)`` let correlations
    die out with distance (oscillations of G decay as exp(-Q1^2 growth r / 2), Q1 the
    first peak of S). Shells whose widths grow with r spread outwards on average: the
    Gaussian-smeared sum of weights 4 pi rho0 r with a variance of slope ``growth``
    exceeds the baseline 4 pi rho0 r by 4 pi rho0 growth at all r (second-order
    Kramers-Moyal term, (1/2) d^2/dr^2 [4 pi rho0 r sigma^2(r)]). Weighting the shells
    beyond the first by (1 - growth / r_k) removes that excess exactly in the continuum
    limit (the smeared sum of 4 pi rho0 (r - growth) is 4 pi rho0 r, all higher terms
    vanish), so G decays to zero. The first shell keeps its full coordination.

    ``occupancy`` (<= 1) scales every shell: a network with a fraction 1 - occupancy of
    randomly placed vacancies, whose density is ``occupancy * 8 / a^3`` atoms/A^3.

    Parameters
    ----------
    a_A : float
        Cubic lattice parameter of the parent diamond structure (A).
    r_max_A : float
        Largest shell radius (A).
    sigma1_A : float
        Width of the first (bond) shell (A).
    growth_A : float
        Growth of sigma^2 per unit distance (A^2 / A).
    occupancy : float
        Fraction of occupied sites, in (0, 1].
    """
    if not 0 < occupancy <= 1:
        raise SampleError(f"occupancy {occupancy} must be in (0, 1]")
    m_max = int((4.0 * r_max_A / a_A) ** 2)
    same = _three_square_counts(m_max // 4, odd=False)
    counts = _three_square_counts(m_max, odd=True) / 2.0
    m = np.arange(m_max + 1)
    on_sublattice = (m % 8 == 0)
    counts[on_sublattice] += same[m[on_sublattice] // 4]
    keep = (m > 0) & (counts > 0)
    r = a_A / 4.0 * np.sqrt(m[keep])
    n = counts[keep] * occupancy
    n[1:] *= 1.0 - growth_A / r[1:]
    sigma = np.sqrt(sigma1_A**2 + growth_A * (r - r[0]))
    return PairShells(tuple(r.tolist()), tuple(n.tolist()), tuple(sigma.tolist()))


def sphere_characteristic(r_A: np.ndarray, diameter_A: float) -> np.ndarray:
    """Characteristic function gamma(r) of a sphere of diameter ``diameter_A`` (A): the
    fraction of its volume that stays inside when shifted by r (A)."""
    x = np.clip(np.asarray(r_A, dtype=float) / diameter_A, 0.0, 1.0)
    return 1.0 - 1.5 * x + 0.5 * x**3


def smooth_cutoff(r_A: np.ndarray, start_A: float, end_A: float) -> np.ndarray:
    """1 up to ``start_A``, 0 from ``end_A`` (A), and the C^2 step 1 - (10 t^3 - 15 t^4 + 6 t^5) between."""
    t = np.clip((np.asarray(r_A, dtype=float) - start_A) / (end_A - start_A), 0.0, 1.0)
    return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t * t)


def _shell_sum(r_sorted: np.ndarray, shells: PairShells) -> np.ndarray:
    """sum_k (n_k / r_k) [N(r; r_k, sigma_k) - N(r; -r_k, sigma_k)] at increasing ``r_sorted`` (A).

    Each Gaussian is summed only within :data:`SHELL_HALF_WIDTH_SIGMAS` of its centre.
    """
    r_k, n_k, s_k = shells.arrays()
    out = np.zeros_like(r_sorted)
    reach = SHELL_HALF_WIDTH_SIGMAS * s_k
    for sign in (1.0, -1.0):
        centre = sign * r_k
        lo = np.searchsorted(r_sorted, centre - reach)
        count = np.searchsorted(r_sorted, centre + reach) - lo
        height = sign * n_k / (r_k * s_k * math.sqrt(2.0 * math.pi))
        ends = np.cumsum(count)
        first = 0
        while first < len(r_k):  # chunks of about CHUNK_TERMS (shell, point) terms
            last = max(int(np.searchsorted(ends, ends[first] - count[first] + CHUNK_TERMS, side="right")), first + 1)
            c = count[first:last]
            shell = np.repeat(np.arange(first, last), c)
            index = np.arange(c.sum()) + np.repeat(lo[first:last] - (np.cumsum(c) - c), c)
            z = (r_sorted[index] - centre[shell]) / s_k[shell]
            out += np.bincount(index, height[shell] * np.exp(-0.5 * z * z), minlength=len(r_sorted))
            first = last
    return out


def _envelope(r_A: np.ndarray, diameter_A: float | None, cutoff_A: tuple[float, float] | None) -> np.ndarray:
    """E(r): the sphere's characteristic function if ``diameter_A`` (A) is given, else the smooth cut-off."""
    if diameter_A is not None:
        return sphere_characteristic(r_A, diameter_A)
    return smooth_cutoff(r_A, *cutoff_A)


def _reduced_pdf(r_A: np.ndarray, shells: PairShells, number_density_A3: float, diameter_A: float | None,
                 cutoff_A: tuple[float, float] | None) -> np.ndarray:
    """G(r) (1/A^2) at ``r_A`` (A): E(r) [shell sum - 4 pi rho0 r] (module docstring)."""
    r = np.asarray(r_A, dtype=float)
    flat = r.ravel()
    order = np.argsort(flat, kind="stable")
    g = np.empty_like(flat)
    g[order] = _shell_sum(flat[order], shells)
    g -= 4.0 * math.pi * number_density_A3 * flat
    return (g * _envelope(flat, diameter_A, cutoff_A)).reshape(r.shape)


@dataclass(frozen=True, eq=False)
class StructureTables:
    """F(Q) and S(Q) on the uniform grid ``q_A`` (1/A) from 0 to :data:`TABLE_Q_MAX` (read-only arrays)."""

    q_A: np.ndarray
    reduced_structure_function: np.ndarray
    structure_factor: np.ndarray


@dataclass(frozen=True)
class TotalScatteringSample(Sample):
    """A sample defined by its pair distribution function (see the module docstring).

    Parameters
    ----------
    name, material, thickness_mm
        As :class:`~xrd_bluesky.science.sim.samples.Sample` (``material`` at the packed
        density, for transmission).
    composition : str
        Chemical formula, for the scattering factors (a single element: see the module
        docstring).
    shells : PairShells
        The pair shells; they must reach beyond the envelope's end.
    number_density_A3 : float
        rho0, atoms per A^3 of the solid (not of the packed powder).
    packing_fraction : float
        Volume fraction of the beam path filled by the solid, in (0, 1].
    diameter_A : float, optional
        Crystallite diameter D (A): the envelope is the sphere's characteristic function.
    cutoff_A : tuple of float, optional
        ``(start, end)`` (A) of the smooth cut-off envelope, for a glass. Exactly one of
        ``diameter_A`` and ``cutoff_A`` is given.
    """

    composition: str
    shells: PairShells
    number_density_A3: float
    packing_fraction: float = 1.0
    diameter_A: float | None = None
    cutoff_A: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        parse_composition(self.composition)
        if not (self.number_density_A3 > 0 and math.isfinite(self.number_density_A3)):
            raise SampleError(f"number density of {self.name!r} must be > 0 atoms/A^3")
        if not 0 < self.packing_fraction <= 1:
            raise SampleError(f"packing fraction of {self.name!r} must be in (0, 1], got {self.packing_fraction}")
        if (self.diameter_A is None) == (self.cutoff_A is None):
            raise SampleError(f"sample {self.name!r}: give exactly one envelope, a crystallite diameter_A or a "
                              "glass's cutoff_A = (start, end)")
        if self.diameter_A is not None and not self.diameter_A > 0:
            raise SampleError(f"crystallite diameter of {self.name!r} must be > 0 A")
        if self.cutoff_A is not None and not 0 < self.cutoff_A[0] < self.cutoff_A[1]:
            raise SampleError(f"cut-off of {self.name!r} must be 0 < start < end (A), got {self.cutoff_A}")
        if self.shells.distances_A[-1] < self.envelope_end_A:
            raise SampleError(f"pair shells of {self.name!r} end at {self.shells.distances_A[-1]:.4g} A, before "
                              f"the envelope's end at {self.envelope_end_A:.4g} A")

    @property
    def envelope_end_A(self) -> float:
        """r (A) beyond which G(r) is zero."""
        return self.diameter_A if self.diameter_A is not None else self.cutoff_A[1]

    @property
    def atoms_per_cm3(self) -> float:
        """Atoms per cm^3 of the beam path: packing fraction x rho0."""
        return self.packing_fraction * self.number_density_A3 * 1e24

    def envelope(self, r_A: np.ndarray) -> np.ndarray:
        """E(r) at ``r_A`` (A): the sphere's characteristic function or the smooth cut-off."""
        return _envelope(r_A, self.diameter_A, self.cutoff_A)

    def true_gr(self, r_A: np.ndarray) -> np.ndarray:
        """The reduced pair distribution function G(r) (1/A^2) at ``r_A`` (A, >= 0)."""
        return _reduced_pdf(r_A, *self._structure())

    def radial_distribution(self, r_A: np.ndarray) -> np.ndarray:
        """R(r) = 4 pi r^2 rho(r) (1/A) at ``r_A`` (A): neighbours per atom per unit r,
        ``r G(r) + 4 pi rho0 r^2 E(r)``."""
        r = np.asarray(r_A, dtype=float)
        return r * self.true_gr(r) + 4.0 * math.pi * self.number_density_A3 * r * r * self.envelope(r)

    def true_peak_positions(self, r_max_A: float, step_A: float = 1e-3) -> np.ndarray:
        """Positions (A) of the local maxima of G(r) on (0, ``r_max_A``], located on a grid
        of ``step_A`` (A) and refined by a parabola through the three highest points.

        Shells closer than about 2 sigma merge into one maximum (for fcc Ni beyond
        ~10 A), which then lies between their distances: compare a measured G(r)'s peaks
        with these, not with :meth:`pair_distances`.
        """
        r = np.arange(step_A, r_max_A + step_A, step_A)
        return peak_positions(r, self.true_gr(r))

    def pair_distances(self, r_max_A: float) -> tuple[np.ndarray, np.ndarray]:
        """Shell distances r_k (A) up to ``r_max_A`` and their mean neighbour numbers n_k
        (of the bulk structure, before the envelope)."""
        r, n, _ = self.shells.arrays()
        keep = r <= r_max_A
        return r[keep], n[keep]

    def _structure(self) -> tuple[PairShells, float, float | None, tuple[float, float] | None]:
        """(shells, rho0, diameter, cut-off): what G(r) depends on, hashable."""
        return self.shells, self.number_density_A3, self.diameter_A, self.cutoff_A

    def tables(self) -> StructureTables:
        """The tabulated F(Q) and S(Q) (computed once per structure)."""
        return _structure_tables(*self._structure())

    def structure_factor(self, q_A: np.ndarray) -> np.ndarray:
        """S(Q) at ``q_A`` (1/A), interpolated in the table (1 beyond it)."""
        t = self.tables()
        return np.interp(q_A, t.q_A, t.structure_factor, right=1.0)

    def reduced_structure_function(self, q_A: np.ndarray) -> np.ndarray:
        """F(Q) = Q (S(Q) - 1) (1/A) at ``q_A`` (1/A), interpolated in the table (0 beyond it)."""
        t = self.tables()
        return np.interp(q_A, t.q_A, t.reduced_structure_function, right=0.0)

    def cross_section_q(self, q_A: np.ndarray) -> np.ndarray:
        """dSigma/dOmega (1/cm/sr) at ``q_A`` (1/A)."""
        q, xs = _cross_section_table(self.composition, self.atoms_per_cm3, *self._structure())
        return np.interp(q_A, q, xs)

    def profile(self, two_theta: np.ndarray, wavelength_m: float) -> np.ndarray:
        """dSigma/dOmega (1/cm/sr) at scattering angles ``two_theta`` (rad) for ``wavelength_m`` (m)."""
        q_A = 4.0 * math.pi * np.sin(np.asarray(two_theta, dtype=float) / 2.0) / (wavelength_m * 1e10)
        return self.cross_section_q(q_A)

    def metadata(self) -> dict:
        md = super().metadata()
        md.update(composition=self.composition, number_density_A3=self.number_density_A3,
                  packing_fraction=self.packing_fraction)
        if self.diameter_A is not None:
            md["crystallite_diameter_A"] = self.diameter_A
        else:
            md["cutoff_A"] = list(self.cutoff_A)
        return md


@lru_cache(maxsize=8)
def _structure_tables(shells: PairShells, number_density_A3: float, diameter_A: float | None,
                      cutoff_A: tuple[float, float] | None) -> StructureTables:
    """F(Q) and S(Q) of a structure by the sine transform of its G(r) (module docstring)."""
    end_A = diameter_A if diameter_A is not None else cutoff_A[1]
    dr = TRANSFORM_R_STEP_A
    n_points = 2 ** math.ceil(math.log2(max(math.pi / (TABLE_Q_STEP_MAX_A * dr), 2.0 * end_A / dr)))
    r = np.arange(1, math.ceil(end_A / dr) + 1) * dr
    g = np.zeros(n_points - 1)  # G at r_j = j dr, j = 1 .. n_points - 1; G(0) = G(n_points dr) = 0
    g[:len(r)] = _reduced_pdf(r, shells, number_density_A3, diameter_A, cutoff_A)
    dq = math.pi / (n_points * dr)
    n_q = int(TABLE_Q_MAX / dq) + 1
    f = np.concatenate([[0.0], dst(g, type=1)[:n_q - 1] * (dr / 2.0)])  # dst-I: 2 sum_j g_j sin(pi k j / n_points)
    q = np.arange(n_q) * dq
    s = np.empty(n_q)
    s[1:] = 1.0 + f[1:] / q[1:]
    s[0] = 1.0 + dr * float(np.dot(g[:len(r)], r))
    for a in (q, f, s):
        a.setflags(write=False)
    return StructureTables(q, f, s)


@lru_cache(maxsize=8)
def _cross_section_table(composition: str, atoms_per_cm3: float, shells: PairShells, number_density_A3: float,
                         diameter_A: float | None,
                         cutoff_A: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """dSigma/dOmega (1/cm/sr) on the Q grid (1/A) of the structure's tables."""
    tables = _structure_tables(shells, number_density_A3, diameter_A, cutoff_A)
    comp = parse_composition(composition)
    f_mean, f2_mean = comp.mean_form_factors(tables.q_A)
    electron_units = f2_mean + f_mean**2 * (tables.structure_factor - 1.0) + comp.incoherent(tables.q_A)
    xs = atoms_per_cm3 * R_E2_CM2 * electron_units
    xs.setflags(write=False)
    return tables.q_A, xs


#: fcc nickel at room temperature: lattice parameter (A), isotropic U (A^2), PDFfit delta2 (A^2).
NICKEL_A_A = 3.5240
NICKEL_U_ISO_A2 = 0.0045
NICKEL_DELTA2_A2 = 2.3
#: Crystallite diameter (A) of the nickel powder.
NICKEL_DIAMETER_A = 250.0
#: Amorphous silicon: parent diamond lattice (A), bond width (A), width growth (A^2/A), density (g/cm^3), cut-off (A).
A_SI_PARENT_A_A = 5.431
A_SI_SIGMA1_A = 0.07
A_SI_GROWTH_A = 0.1
A_SI_DENSITY_G_CM3 = 2.28
A_SI_CUTOFF_A = (40.0, 60.0)
#: Packing fraction of the powders in their capillaries.
POWDER_PACKING = 0.5


def nickel_powder(name: str = "Ni", thickness_mm: float = 1.0, packing_fraction: float = POWDER_PACKING,
                  diameter_A: float = NICKEL_DIAMETER_A) -> TotalScatteringSample:
    """fcc nickel powder (a = 3.5240 A, U = 0.0045 A^2, delta2 = 2.3 A^2: first-neighbour
    width 0.075 A) of ``diameter_A`` (A) crystallites, packed at ``packing_fraction`` in a
    capillary ``thickness_mm`` (mm) across."""
    rho0 = 4.0 / NICKEL_A_A**3
    density = rho0 * 1e24 * NI_MOLAR_MASS_G_MOL / AVOGADRO
    shells = fcc_shells(NICKEL_A_A, diameter_A + 1.0, NICKEL_U_ISO_A2, NICKEL_DELTA2_A2)
    return TotalScatteringSample(name, Material("Ni", density * packing_fraction), thickness_mm, "Ni", shells, rho0,
                                 packing_fraction, diameter_A=diameter_A)


def amorphous_silicon(name: str = "a-Si", thickness_mm: float = 1.0,
                      packing_fraction: float = POWDER_PACKING) -> TotalScatteringSample:
    """Amorphous silicon powder (2.28 g/cm^3, 1.8 % below crystalline Si, as vacancies in
    the tetrahedral network: 3.92 bonds at 2.352 A of width 0.07 A; widths
    sqrt(0.07^2 + 0.1 (r - r1)) A, so that G(r) has decayed to about 1 % of its first peak
    by 15 A), packed at ``packing_fraction`` in a capillary ``thickness_mm`` (mm) across."""
    rho0 = A_SI_DENSITY_G_CM3 / SI_MOLAR_MASS_G_MOL * AVOGADRO * 1e-24
    occupancy = rho0 * A_SI_PARENT_A_A**3 / 8.0
    end = A_SI_CUTOFF_A[1]
    # shells to where their 7-sigma tails no longer reach the cut-off: r - 7 sqrt(growth r) > end
    r_max = (math.sqrt(49.0 * A_SI_GROWTH_A / 4.0 + end) + 3.5 * math.sqrt(A_SI_GROWTH_A)) ** 2
    shells = paracrystalline_diamond_shells(A_SI_PARENT_A_A, r_max, A_SI_SIGMA1_A, A_SI_GROWTH_A, occupancy)
    return TotalScatteringSample(name, Material("Si", A_SI_DENSITY_G_CM3 * packing_fraction), thickness_mm, "Si",
                                 shells, rho0, packing_fraction, cutoff_A=A_SI_CUTOFF_A)
