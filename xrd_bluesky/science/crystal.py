"""Crystal structures and their powder reflections (d-spacing, multiplicity, |F|^2).

Atomic scattering factors come from xraylib (``FF_Rayl``), which takes the momentum
transfer ``s = sin(theta)/lambda`` in 1/Angstrom.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np
import xraylib


@dataclass(frozen=True)
class Atom:
    """An atom of the unit cell: element symbol, fractional position, isotropic B (A^2)
    and occupancy (the fraction of cells in which it is there, 0 < occupancy <= 1)."""

    element: str
    position: tuple[float, float, float]
    b_iso_A2: float = 0.5
    occupancy: float = 1.0


@dataclass(frozen=True)
class Reflection:
    """A merged powder reflection."""

    hkl: tuple[int, int, int]
    multiplicity: int
    d_A: float
    f_squared: float


@dataclass(frozen=True)
class Crystal:
    """A crystal: lattice parameters (Angstrom, degrees) and all atoms of the cell."""

    name: str
    a: float
    b: float
    c: float
    alpha: float = 90.0
    beta: float = 90.0
    gamma: float = 90.0
    atoms: tuple[Atom, ...] = field(default_factory=tuple)

    def metric(self) -> np.ndarray:
        """Metric tensor G (A^2) such that the length of a fractional vector x is sqrt(x G x) (A)."""
        al, be, ga = (math.radians(v) for v in (self.alpha, self.beta, self.gamma))
        return np.array([
            [self.a**2, self.a * self.b * math.cos(ga), self.a * self.c * math.cos(be)],
            [self.a * self.b * math.cos(ga), self.b**2, self.b * self.c * math.cos(al)],
            [self.a * self.c * math.cos(be), self.b * self.c * math.cos(al), self.c**2],
        ])

    def reciprocal_metric(self) -> np.ndarray:
        """Reciprocal metric tensor G* (1/A^2) such that 1/d^2 = h G* h."""
        return np.linalg.inv(self.metric())

    def strained(self, strain: float) -> Crystal:
        """The same crystal with all lattice lengths scaled by (1 + strain)."""
        f = 1.0 + strain
        return replace(self, a=self.a * f, b=self.b * f, c=self.c * f)

    def structure_factor_squared(self, hkl: tuple[int, int, int], d_A: float) -> float:
        """|F(hkl)|^2 in electrons^2, with Debye-Waller factors and occupancies."""
        s = 0.5 / d_A
        f_total = 0j
        for atom in self.atoms:
            z = xraylib.SymbolToAtomicNumber(atom.element)
            f = atom.occupancy * xraylib.FF_Rayl(z, s) * math.exp(-atom.b_iso_A2 * s * s)
            phase = 2 * math.pi * sum(h * x for h, x in zip(hkl, atom.position))
            f_total += f * complex(math.cos(phase), math.sin(phase))
        return abs(f_total) ** 2

    def reflections(self, d_min_A: float) -> list[Reflection]:
        """All reflections with d >= ``d_min_A`` (A), systematic absences removed,
        symmetry equivalents (same d and |F|^2) merged, sorted by decreasing d."""
        gstar = self.reciprocal_metric()
        # |h| <= a / d_min bounds every index for any cell with angles near 90/120 deg
        hkl_max = math.ceil(max(self.a, self.b, self.c) / d_min_A) + 1
        groups: dict[tuple[float, float], list[tuple[int, int, int]]] = {}
        rng = range(-hkl_max, hkl_max + 1)
        for hkl in itertools.product(rng, rng, rng):
            if hkl == (0, 0, 0):
                continue
            h = np.array(hkl, dtype=float)
            inv_d2 = float(h @ gstar @ h)
            d = 1.0 / math.sqrt(inv_d2)
            if d < d_min_A:
                continue
            f2 = self.structure_factor_squared(hkl, d)
            if f2 < 1e-6:
                continue  # systematic absence
            key = (round(d, 6), round(f2, 3))
            groups.setdefault(key, []).append((hkl, d, f2))
        result = []
        for members in groups.values():
            hkl, d, f2 = max(members)  # deterministic representative: largest hkl tuple
            result.append(Reflection(hkl, len(members), d, f2))
        return sorted(result, key=lambda r: -r.d_A)


def _fcc(positions):
    shifts = [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]
    return [tuple((p[i] + s[i]) % 1.0 for i in range(3)) for p in positions for s in shifts]


def ceo2() -> Crystal:
    """Ceria, fluorite structure (Fm-3m), cell as in pyFAI's CeO2 calibrant (NIST SRM 674b)."""
    atoms = [Atom("Ce", p, 0.2) for p in _fcc([(0, 0, 0)])]
    atoms += [Atom("O", p, 0.5) for p in _fcc([(0.25, 0.25, 0.25), (0.75, 0.75, 0.75)])]
    return Crystal("CeO2", 5.411651, 5.411651, 5.411651, atoms=tuple(atoms))


def lab6() -> Crystal:
    """Lanthanum hexaboride (Pm-3m), cell as in pyFAI's LaB6 calibrant; B at x = 0.1996."""
    x = 0.1996
    b_sites = [(x, .5, .5), (-x % 1, .5, .5), (.5, x, .5), (.5, -x % 1, .5), (.5, .5, x), (.5, .5, -x % 1)]
    atoms = [Atom("La", (0, 0, 0), 0.3)] + [Atom("B", p, 0.4) for p in b_sites]
    return Crystal("LaB6", 4.156826, 4.156826, 4.156826, atoms=tuple(atoms))


def magnesium() -> Crystal:
    """Magnesium, hcp (P6_3/mmc), a = 3.2094 A, c = 5.2108 A (room temperature)."""
    atoms = (Atom("Mg", (1 / 3, 2 / 3, 0.25), 1.5), Atom("Mg", (2 / 3, 1 / 3, 0.75), 1.5))
    return Crystal("Mg", 3.2094, 3.2094, 5.2108, 90, 90, 120, atoms)
