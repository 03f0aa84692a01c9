"""DF-XRM planning, crystal side: CIF expansion, reflection table (Bragg angles, |F|^2
against gemmi's independent IT92 calculation, absences, Laue merging) and attenuation."""

from __future__ import annotations

import itertools
import math

import gemmi
import numpy as np
import pytest
import xraylib

from xrd_bluesky.errors import GeometryError, ImplausibleInputError, SampleError
from xrd_bluesky.science.dfxrm.attenuation import (
    attenuation_length_um,
    material_of,
    transmission,
)
from xrd_bluesky.science.dfxrm.cif_structure import (
    bundled_cif_names,
    cell_volume_A3,
    read_cif,
)
from xrd_bluesky.science.dfxrm.reflection_table import Instrument, reflection_table
from xrd_bluesky.science.units import HC_KEV_ANGSTROM

ENERGY_KEV = 17.0
WIDE = Instrument(0.0, 90.0)
R_E_CM = 2.8179403262e-13  # classical electron radius (cm), CODATA 2018


def _inv_d2(name: str, cell: gemmi.UnitCell, h: int, k: int, ell: int) -> float:
    """1/d^2 (1/A^2) of the reflection (h k ell) from the textbook formulas of each crystal system."""
    if name == "Si":  # cubic
        return (h * h + k * k + ell * ell) / cell.a**2
    if name == "KNbO3":  # orthorhombic
        return h * h / cell.a**2 + k * k / cell.b**2 + ell * ell / cell.c**2
    return 4 / 3 * (h * h + h * k + k * k) / cell.a**2 + ell * ell / cell.c**2  # hexagonal axes


def _gemmi_f2(structure, hkls) -> np.ndarray:
    """|F|^2 by gemmi's own structure-factor calculator (IT92 form factors, no anomalous
    addends, the same B), on its own reading of the CIF."""
    small = gemmi.read_small_structure(structure.source)
    small.change_occupancies_to_crystallographic()  # gemmi sums over all operations
    calc = gemmi.StructureFactorCalculatorX(small.cell)
    return np.array([abs(calc.calculate_sf_from_small_structure(small, list(h))) ** 2 for h in hkls])


def test_bundled_cifs_expand_to_the_full_cell():
    """Cell content, Z and density of the bundled CIFs; densities as published
    (Si 2.329 g/cm^3, corundum 3.987, LiNbO3 4.64 (4.628-4.65), KNbO3 4.62)."""
    assert bundled_cif_names() == ["Al2O3", "KNbO3", "LiNbO3", "Si", "YMnO3"]
    expected = {"Si": ("Si", 8, 8, 2.329), "Al2O3": ("Al2O3", 6, 30, 3.987), "LiNbO3": ("LiNbO3", 6, 30, 4.64),
                "KNbO3": ("KNbO3", 2, 10, 4.62), "YMnO3": ("YMnO3", 6, 30, None)}
    for name, (formula, z, n_atoms, density) in expected.items():
        s = read_cif(name)
        assert (s.formula, s.formula_units, len(s.crystal.atoms)) == (formula, z, n_atoms)
        if density is not None:
            assert s.density_g_cm3 == pytest.approx(density, rel=0.01)
    assert read_cif("si").name == "Si"  # bundled names are case-insensitive


@pytest.mark.parametrize("name", ["Si", "Al2O3", "LiNbO3", "KNbO3", "YMnO3"])
def test_two_theta_is_braggs_law_on_the_lattice(name):
    """Every reflection's 2theta equals Bragg's law with d from the lattice parameters
    (cubic, hexagonal or orthorhombic formula) within 1e-6 deg."""
    structure = read_cif(name)
    cell = gemmi.read_small_structure(structure.source).cell
    table = reflection_table(structure, ENERGY_KEV, WIDE)
    wavelength = HC_KEV_ANGSTROM / ENERGY_KEV
    assert table.reflections
    worst = 0.0
    for r in table.reflections:
        d = 1 / math.sqrt(_inv_d2(name, cell, *r.hkl))
        assert r.d_A == pytest.approx(d, rel=1e-12)
        worst = max(worst, abs(r.two_theta_deg - math.degrees(2 * math.asin(wavelength / (2 * d)))))
    assert worst < 1e-6
    assert [r.two_theta_deg for r in table.reflections] == sorted(r.two_theta_deg for r in table.reflections)


@pytest.mark.parametrize("name", ["Si", "Al2O3", "LiNbO3"])
def test_f_squared_agrees_with_gemmi_on_the_brightest_ten(name, monkeypatch):
    """|F|^2 and relative intensities of the 10 brightest reflections agree with gemmi's
    IT92 calculation within 1 %. Both use B = 0 (the CIFs give none) and no anomalous
    terms; what remains is xraylib's tabulated form factors (relativistic Hartree-Fock)
    against the 4-Gaussian IT92 fits: with IT92 form factors put into our sum, |F|^2
    agrees to 1e-9, so the cell expansion and the phases are exact."""
    structure = read_cif(name)
    table = reflection_table(structure, ENERGY_KEV, WIDE)
    top = sorted(table.reflections, key=lambda r: -r.f_squared)[:10]
    ours = np.array([r.f_squared for r in top])
    theirs = _gemmi_f2(structure, [r.hkl for r in top])
    assert np.max(np.abs(ours / theirs - 1)) < 0.01
    relative_theirs = 100 * theirs / theirs[0]
    assert np.max(np.abs(np.array([r.relative_intensity for r in top]) / relative_theirs - 1)) < 0.01
    assert table.brightest().hkl == top[0].hkl
    monkeypatch.setattr(xraylib, "FF_Rayl", lambda z, s: gemmi.Element(z).it92.calculate_sf(s * s))
    with_it92 = np.array([structure.crystal.structure_factor_squared(r.hkl, r.d_A) for r in top])
    assert np.max(np.abs(with_it92 / theirs - 1)) < 1e-9


def test_displacement_parameters_are_the_same_b_as_gemmi(tmp_path):
    """A CIF with U_iso: B = 8 pi^2 U enters our |F|^2 as gemmi's Debye-Waller factor."""
    cif = tmp_path / "Si_U.cif"
    cif.write_text(open(read_cif("Si").source).read()
                   .replace("_atom_site_occupancy", "_atom_site_occupancy\n_atom_site_U_iso_or_equiv")
                   .replace("0.125 0.125 0.125 1.0", "0.125 0.125 0.125 1.0 0.0060"))
    structure = read_cif(cif)
    assert structure.crystal.atoms[0].b_iso_A2 == pytest.approx(8 * math.pi**2 * 0.006)
    top = sorted(reflection_table(structure, ENERGY_KEV, WIDE).reflections, key=lambda r: -r.f_squared)[:10]
    theirs = _gemmi_f2(structure, [r.hkl for r in top])
    assert np.max(np.abs(np.array([r.f_squared for r in top]) / theirs - 1)) < 0.01
    static = {r.hkl: r.f_squared for r in reflection_table(read_cif("Si"), ENERGY_KEV, WIDE).reflections}
    assert all(r.f_squared < static[r.hkl] for r in top)


def test_silicon_absences_and_multiplicities():
    """Si: 200 absent by the space group, 222 extinct (|F|^2 = 0 for spherical atoms),
    111 x 8, 220 x 12, 311 x 24, 400 x 6; 333 and 511 (same d, same |F|^2, not
    equivalent) stay two reflections."""
    table = reflection_table(read_cif("Si"), ENERGY_KEV, Instrument(0.0, 60.0))
    rows = {r.hkl: r for r in table.reflections}
    assert {(1, 1, 1): 8, (2, 2, 0): 12, (3, 1, 1): 24, (4, 0, 0): 6} == {
        hkl: rows[hkl].multiplicity for hkl in [(1, 1, 1), (2, 2, 0), (3, 1, 1), (4, 0, 0)]}
    assert (2, 0, 0) not in rows and (2, 2, 2) not in rows
    assert rows[(3, 3, 3)].d_A == pytest.approx(rows[(5, 1, 1)].d_A)
    assert rows[(3, 3, 3)].f_squared == pytest.approx(rows[(5, 1, 1)].f_squared)
    assert (rows[(3, 3, 3)].multiplicity, rows[(5, 1, 1)].multiplicity) == (8, 24)
    with pytest.raises(GeometryError, match="systematically absent"):
        table.find((2, 0, 0))
    with pytest.raises(GeometryError, match="forbidden"):
        table.find((2, 2, 2))
    assert table.find((0, -2, 2)).hkl == (0, -2, 2) and table.find((0, -2, 2)).multiplicity == 12


def test_corundum_absences():
    """R-3c (hexagonal axes): -h+k+l = 3n (obverse centring), 000l with l = 6n,
    h-h0l with l even; every reflection of the table obeys them."""
    table = reflection_table(read_cif("Al2O3"), ENERGY_KEV, WIDE)
    for r in table.reflections:
        h, k, ell = r.hkl
        assert (-h + k + ell) % 3 == 0
        if h == k == 0:
            assert ell % 6 == 0
        if k == -h:
            assert ell % 2 == 0
    for hkl in [(0, 0, 3), (1, 0, 0), (2, -2, 1), (0, 0, 9)]:
        with pytest.raises(GeometryError, match="systematically absent"):
            table.find(hkl)
    for hkl in [(0, 0, 6), (0, 1, 2), (1, 0, 4), (1, 1, 3)]:
        assert table.find(hkl).f_squared > 0


@pytest.mark.parametrize("name", ["Si", "Al2O3", "YMnO3"])
def test_equivalents_are_the_laue_orbits(name):
    """Each row stands for its Laue orbit (gemmi's point-group operations plus Friedel
    pairs): all members share d and |F|^2, their number is the multiplicity, and the
    multiplicities add up to every allowed hkl in the 2theta range."""
    structure = read_cif(name)
    table = reflection_table(structure, ENERGY_KEV)
    ops = structure.space_group.operations()
    seen = set()
    for r in table.reflections:
        orbit = {tuple(op.apply_to_hkl(list(r.hkl))) for op in ops.sym_ops}
        orbit |= {tuple(-v for v in h) for h in orbit}
        assert len(orbit) == r.multiplicity
        assert not orbit & seen
        seen |= orbit
        for member in orbit:
            assert table.find(member).f_squared == pytest.approx(r.f_squared, rel=1e-9)
    wavelength = HC_KEV_ANGSTROM / ENERGY_KEV
    cell = gemmi.read_small_structure(structure.source).cell
    n = 13  # |h| <= a / d_min for the largest axis (corundum c)
    allowed = 0
    for hkl in itertools.product(range(-n, n + 1), repeat=3):
        if hkl == (0, 0, 0) or ops.is_systematically_absent(list(hkl)):
            continue
        s = wavelength / (2 * cell.calculate_d(list(hkl)))
        if s <= 1 and 2.0 <= math.degrees(2 * math.asin(s)) <= 40.0:
            allowed += structure.crystal.structure_factor_squared(hkl, cell.calculate_d(list(hkl))) > 1e-3
    assert sum(r.multiplicity for r in table.reflections) == allowed


def test_energy_outside_the_tables_is_refused():
    structure = read_cif("Si")
    for energy in (0.5, 80.0, float("nan")):
        with pytest.raises(GeometryError, match="outside the range 1-60 keV"):
            reflection_table(structure, energy)
        with pytest.raises(GeometryError, match="outside the range 1-60 keV"):
            attenuation_length_um(material_of(structure), energy)


def test_bad_cif_names_and_files(tmp_path):
    with pytest.raises(SampleError, match="neither a CIF file nor a bundled CIF"):
        read_cif("Unobtainium")
    overfull = tmp_path / "overfull.cif"
    overfull.write_text(open(read_cif("Si").source).read().replace("0.125 0.125 0.125 1.0", "0.125 0.125 0.125 1.5"))
    with pytest.raises(ImplausibleInputError, match="_atom_site_occupancy = 1.5 is outside"):
        read_cif(overfull)


def test_silicon_attenuation_length():
    """Si at 17 keV: ours (density from the CIF cell) within 1 % of xraylib's tabulated
    value computed directly; at 10 and 20 keV within 1 % of Hubbell & Seltzer's
    (NIST X-ray mass attenuation coefficients, 1995) mu/rho = 33.89 and 4.464 cm^2/g."""
    si = material_of(read_cif("Si"))
    direct = 1e4 / (xraylib.CS_Total(14, 17.0) * 2.329)
    assert attenuation_length_um(si, 17.0) == pytest.approx(direct, rel=0.01)
    for energy, mu_rho in ((10.0, 33.89), (20.0, 4.464)):
        assert attenuation_length_um(si, energy) == pytest.approx(1e4 / (mu_rho * 2.329), rel=0.01)
    thickness = np.array([0.0, 100.0, 1000.0])
    assert transmission(si, thickness, 17.0) == pytest.approx(np.exp(-thickness / direct), rel=0.01)


@pytest.mark.parametrize("name", ["LiNbO3", "KNbO3"])
def test_niobate_attenuation_is_plausible(name):
    """LiNbO3 and KNbO3: against an independent photoabsorption cross-section (gemmi's
    Cromer-Liberman f'' : sigma_a = 2 r_e lambda f'') plus xraylib's scattering, within
    5 % at 10, 17 and 30 keV; the Nb K edge (18.99 keV) cuts the attenuation length by
    more than 3; densities as published (LiNbO3 4.64, KNbO3 4.62 g/cm^3)."""
    structure = read_cif(name)
    material = material_of(structure)
    counts = {}
    for atom in structure.crystal.atoms:
        counts[atom.element] = counts.get(atom.element, 0) + 1
    volume_cm3 = cell_volume_A3(structure.crystal) * 1e-24
    for energy in (10.0, 17.0, 30.0):
        wavelength_cm = HC_KEV_ANGSTROM / energy * 1e-8
        mu = 0.0
        for element, n in counts.items():
            z = xraylib.SymbolToAtomicNumber(element)
            f2 = gemmi.cromer_liberman(z=z, energy=energy * 1e3)[1]
            cross_section_cm2_g = xraylib.CS_Rayl(z, energy) + xraylib.CS_Compt(z, energy)
            scatter = cross_section_cm2_g * xraylib.AtomicWeight(z) / 6.02214076e23
            mu += n * (2 * R_E_CM * wavelength_cm * f2 + scatter) / volume_cm3
        assert attenuation_length_um(material, energy) == pytest.approx(1e4 / mu, rel=0.05)
    assert attenuation_length_um(material, 18.9) > 3 * attenuation_length_um(material, 19.1)
    assert structure.density_g_cm3 == pytest.approx({"LiNbO3": 4.64, "KNbO3": 4.62}[name], rel=0.01)
