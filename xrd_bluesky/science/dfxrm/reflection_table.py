"""Single-crystal reflection table for DF-XRM planning.

For a crystal structure, a photon energy and an :class:`Instrument` (its 2theta range and
scattering plane), the table lists every allowed reflection the instrument reaches:
hkl, multiplicity, d-spacing (A), 2theta (deg), |F|^2 (electrons^2) and the relative
intensity, sorted by 2theta.

Intensity. DF-XRM brings one reflection hkl of a single crystal into the Bragg condition;
the strength of that Bragg spot scales with |F(hkl)|^2. The relative intensity is
therefore ``100 * |F|^2 / max |F|^2`` over the table, **without multiplicity** (the
equivalents are other orientations of the crystal, not extra intensity) **and without
Lorentz-polarization** (which depend on how the reflection is rocked and on the beam's
polarization, not on the crystal). |F|^2 is
:meth:`~xrd_bluesky.science.crystal.Crystal.structure_factor_squared`: xraylib's
form factors, isotropic Debye-Waller factors, no anomalous terms.

Absences. A reflection is removed when gemmi's space group declares it systematically
absent (``GroupOps.is_systematically_absent``) or when its |F|^2 is below
:data:`ZERO_F2_FRACTION` times F(000)^2 (extinct by the atomic positions, e.g. Si 222
in the spherical-atom model).

Equivalents. hkl related by the Laue group (the point group's rotations and the
inversion, which Friedel's law adds) are one reflection whose multiplicity is the size of
that orbit. Its representative is the member with the fewest negative indices, then the
largest (h, k, l).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import xraylib

from ...errors import GeometryError
from ..crystal import Reflection
from ..units import HC_KEV_ANGSTROM, two_theta_rad
from .attenuation import check_energy_keV
from .cif_structure import CrystalStructure

#: |F|^2 below this fraction of F(000)^2 counts as zero (extinct reflection).
ZERO_F2_FRACTION = 1e-10
#: The scattering planes an :class:`Instrument` may have.
SCATTERING_PLANES = ("vertical", "horizontal")

HKL = tuple[int, int, int]


@dataclass(frozen=True)
class Instrument:
    """The diffractometer of a DF-XRM setup.

    Attributes
    ----------
    two_theta_min_deg, two_theta_max_deg : float
        The 2theta range the detector/objective arm reaches (deg). The defaults are an
        example; set your instrument's.
    scattering_plane : {"vertical", "horizontal"}
        Plane of the incident and diffracted beams: ``"vertical"`` (x-z, diffracted beam
        upwards, as at ESRF ID06-HXM) or ``"horizontal"`` (x-y, diffracted beam towards +y).
    """

    two_theta_min_deg: float = 2.0
    two_theta_max_deg: float = 40.0
    scattering_plane: Literal["vertical", "horizontal"] = "vertical"

    def __post_init__(self) -> None:
        if not 0.0 <= self.two_theta_min_deg < self.two_theta_max_deg <= 180.0:
            raise GeometryError(f"2theta range [{self.two_theta_min_deg}, {self.two_theta_max_deg}] deg must "
                                "satisfy 0 <= min < max <= 180")
        if self.scattering_plane not in SCATTERING_PLANES:
            raise GeometryError(f"scattering plane {self.scattering_plane!r} is not one of {SCATTERING_PLANES}")


@dataclass(frozen=True)
class TableReflection(Reflection):
    """A reflection of the table: :class:`Reflection` plus 2theta (deg) and the relative
    intensity (brightest = 100, |F|^2 only)."""

    two_theta_deg: float
    relative_intensity: float


@dataclass(frozen=True)
class ReflectionTable:
    """The allowed reflections an instrument reaches at one energy, sorted by 2theta."""

    structure: CrystalStructure
    energy_keV: float
    instrument: Instrument
    reflections: tuple[TableReflection, ...]

    @property
    def wavelength_A(self) -> float:
        """X-ray wavelength (A)."""
        return HC_KEV_ANGSTROM / self.energy_keV

    def brightest(self) -> TableReflection:
        """The reflection of largest |F|^2 (the lowest 2theta among equals).

        Raises
        ------
        GeometryError
            If no allowed reflection lies in the instrument's 2theta range.
        """
        if not self.reflections:
            inst = self.instrument
            raise GeometryError(f"{self.structure.name} has no allowed reflection at {self.energy_keV:g} keV in the "
                                f"2theta range {inst.two_theta_min_deg:g}-{inst.two_theta_max_deg:g} deg")
        return max(self.reflections, key=lambda r: (r.f_squared, -r.two_theta_deg))

    def find(self, hkl: HKL) -> TableReflection:
        """The table's reflection for ``hkl`` or any Laue equivalent of it, carrying ``hkl``.

        Raises
        ------
        GeometryError
            If hkl is (0 0 0), systematically absent, extinct (|F|^2 = 0), unreachable at
            this energy or outside the instrument's 2theta range.
        """
        hkl = tuple(int(v) for v in hkl)
        if hkl == (0, 0, 0):
            raise GeometryError("hkl (0 0 0) is the direct beam, not a reflection")
        label = _hkl_text(hkl)
        sg = self.structure.space_group
        if sg.operations().is_systematically_absent(list(hkl)):
            raise GeometryError(f"reflection {label} is systematically absent in space group {sg.xhm()}")
        representative = tuple(int(v) for v in _canonical_keys(sg, np.array([hkl]))[1][0])
        for row in self.reflections:
            if row.hkl == representative:
                return replace(row, hkl=hkl)
        crystal = self.structure.crystal
        h = np.array(hkl, dtype=float)
        d = 1.0 / math.sqrt(float(h @ crystal.reciprocal_metric() @ h))
        if crystal.structure_factor_squared(hkl, d) < _zero_f2(self.structure):
            raise GeometryError(f"reflection {label} is forbidden: |F|^2 = 0 from the atomic positions "
                                f"of {self.structure.name}")
        tth = float(np.degrees(two_theta_rad(d, self.wavelength_A * 1e-10)))
        if math.isnan(tth):
            raise GeometryError(f"reflection {label} (d = {d:.5f} A) is unreachable at {self.energy_keV:g} keV "
                                f"(lambda/2 = {self.wavelength_A / 2:.5f} A)")
        inst = self.instrument
        raise GeometryError(f"reflection {label} at 2theta = {tth:.4f} deg is outside the instrument's range "
                            f"{inst.two_theta_min_deg:g}-{inst.two_theta_max_deg:g} deg at {self.energy_keV:g} keV")

    def lines(self) -> list[str]:
        """The table as text lines (header, column names, one line per reflection)."""
        s, inst = self.structure, self.instrument
        out = [f"{s.name} ({s.formula}, {s.space_group.xhm()}, Z = {s.formula_units}, "
               f"{s.density_g_cm3:.4f} g/cm^3) at {self.energy_keV:g} keV (lambda = {self.wavelength_A:.6f} A), "
               f"2theta {inst.two_theta_min_deg:g}-{inst.two_theta_max_deg:g} deg",
               f"{'h':>4s}{'k':>4s}{'l':>4s} {'mult':>5s} {'d (A)':>10s} {'2theta (deg)':>13s} "
               f"{'|F|^2 (e^2)':>13s} {'I_rel':>7s}"]
        for r in self.reflections:
            out.append(f"{r.hkl[0]:4d}{r.hkl[1]:4d}{r.hkl[2]:4d} {r.multiplicity:5d} {r.d_A:10.6f} "
                       f"{r.two_theta_deg:13.6f} {r.f_squared:13.6g} {r.relative_intensity:7.2f}")
        return out


def reflection_table(structure: CrystalStructure, energy_keV: float,
                     instrument: Instrument = Instrument()) -> ReflectionTable:
    """Allowed reflections of ``structure`` in the instrument's 2theta range at ``energy_keV``.

    Parameters
    ----------
    structure : CrystalStructure
        The crystal (e.g. from :func:`~xrd_bluesky.science.dfxrm.cif_structure.read_cif`).
    energy_keV : float
        Photon energy (keV), within the planning range 1-60 keV.
    instrument : Instrument
        2theta range (deg) and scattering plane.

    Returns
    -------
    ReflectionTable
        Reflections sorted by 2theta, equivalents merged, absences removed.

    Raises
    ------
    GeometryError
        If the energy is outside the planning range.
    """
    energy = check_energy_keV(energy_keV)
    wavelength_A = HC_KEV_ANGSTROM / energy
    crystal = structure.crystal
    half_max = math.radians(instrument.two_theta_max_deg) / 2
    half_min = math.radians(instrument.two_theta_min_deg) / 2
    inv_d_max = 2 * math.sin(half_max) / wavelength_A  # 1/d_min (1/A)
    inv_d_min = 2 * math.sin(half_min) / wavelength_A
    # |h| = |a . G| <= a |G| = a / d: the bound on each index for any cell
    bounds = [int(math.floor(length * inv_d_max)) for length in (crystal.a, crystal.b, crystal.c)]
    grids = np.meshgrid(*(np.arange(-n, n + 1) for n in bounds), indexing="ij")
    hkl = np.stack([g.ravel() for g in grids], axis=1)
    inv_d2 = np.einsum("ni,ij,nj->n", hkl, crystal.reciprocal_metric(), hkl)
    hkl = hkl[(inv_d2 <= inv_d_max**2) & (inv_d2 >= inv_d_min**2) & (inv_d2 > 0)]
    keys, representatives = _canonical_keys(structure.space_group, hkl)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    ops = structure.space_group.operations()
    gstar, zero_f2 = crystal.reciprocal_metric(), _zero_f2(structure)
    rows = []
    for index, multiplicity in zip(first, counts):
        rep = tuple(int(v) for v in representatives[index])
        if ops.is_systematically_absent(list(rep)):
            continue
        h = np.array(rep, dtype=float)
        d = 1.0 / math.sqrt(float(h @ gstar @ h))
        f2 = crystal.structure_factor_squared(rep, d)
        if f2 < zero_f2:
            continue
        tth = float(np.degrees(two_theta_rad(d, wavelength_A * 1e-10)))
        rows.append((rep, int(multiplicity), d, tth, f2))
    f2_max = max((row[4] for row in rows), default=1.0)
    reflections = tuple(TableReflection(rep, mult, d, f2, tth, 100.0 * f2 / f2_max)
                        for rep, mult, d, tth, f2 in sorted(rows, key=lambda r: (r[3], [-v for v in r[0]])))
    return ReflectionTable(structure, energy, instrument, reflections)


def laue_rotations(space_group) -> np.ndarray:
    """The Laue group's rotations acting on row vectors hkl: ``hkl @ M`` (n, 3, 3) ints.

    Parameters
    ----------
    space_group : gemmi.SpaceGroup
        The space group; its point-group rotations and their negatives (inversion).
    """
    mats = {tuple(np.array(op.rot).ravel() // op.DEN) for op in space_group.operations().sym_ops}
    mats |= {tuple(-v for v in m) for m in mats}
    return np.array(sorted(mats)).reshape(-1, 3, 3)


def _canonical_keys(space_group, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A label shared by all Laue equivalents of each row of ``hkl`` (n, 3) within this
    call, and the representative of each row's orbit (fewest negative indices, then the
    largest hkl), which is the same in every call."""
    images = np.einsum("ni,mij->nmj", hkl, laue_rotations(space_group))  # (n, ops, 3)
    m = int(np.abs(images).max(initial=0))
    base = 2 * m + 1
    code = ((images[..., 0] + m) * base + images[..., 1] + m) * base + images[..., 2] + m
    score = code - (images < 0).sum(axis=2) * base**3
    best = score.argmax(axis=1)
    representatives = images[np.arange(len(hkl)), best]
    return score[np.arange(len(hkl)), best], representatives


def _zero_f2(structure: CrystalStructure) -> float:
    """|F|^2 (e^2) below which a reflection is extinct: :data:`ZERO_F2_FRACTION` of F(000)^2."""
    f000 = sum(xraylib.SymbolToAtomicNumber(atom.element) for atom in structure.crystal.atoms)
    return ZERO_F2_FRACTION * f000**2


def _hkl_text(hkl: HKL) -> str:
    return "(" + " ".join(str(v) for v in hkl) + ")"
