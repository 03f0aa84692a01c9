"""CIF origin choices and partly occupied sites.

Origin choices: a CIF that names a space group with two origin choices (``F d -3 m``) but
lists no symmetry operations leaves the origin open. Si written with Si at (0, 0, 0), as in
Wyckoff's tables (origin choice 1), read as origin choice 2 (gemmi's default) has Z = 16,
twice the density, no 220 and the forbidden 222 brightest. The reader names both choices
with their Z and density and takes the one the CIF's items decide, else the physically
plausible one, saying which and why; operations or a Hall symbol leave nothing open.

Occupancies: a site's occupancy multiplies its atoms' scattering factors and their share
of the composition and density; atoms closer than 0.5 A are alternatives only if their
occupancies add up to at most 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import gemmi
import numpy as np
import pytest
import xraylib

from xrd_bluesky.cli import main
from xrd_bluesky.errors import ImplausibleInputError
from xrd_bluesky.science.crystal import Crystal
from xrd_bluesky.science.dfxrm.attenuation import attenuation_length_um, material_of
from xrd_bluesky.science.dfxrm.cif_structure import bundled_cif_names, read_cif
from xrd_bluesky.science.dfxrm.reflection_table import Instrument, reflection_table

A_SI_A = 5.431020511
N_A = 6.02214076e23
#: IUPAC standard atomic weights (g/mol).
WEIGHT = {"Si": 28.085, "Ge": 72.630, "Fe": 55.845, "O": 15.999}
#: Si density (g/cm^3) of 8 atoms in the cell: 2.3290.
SI_DENSITY = 8 * WEIGHT["Si"] / (N_A * A_SI_A**3 * 1e-24)


def cif_text(symmetry: str, sites: list[str], a_A: float = A_SI_A, extra: str = "") -> str:
    """A cubic CIF with the given symmetry lines, extra items and site rows (label, element,
    x, y, z, occupancy)."""
    return (f"data_test\n_cell_length_a {a_A}\n_cell_length_b {a_A}\n_cell_length_c {a_A}\n"
            "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
            f"{symmetry}\n{extra}\nloop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n"
            "_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\n" + "\n".join(sites) + "\n")


def write(tmp_path: Path, text: str, name: str = "test.cif") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def wyckoff_si(tmp_path: Path, extra: str = "", a_A: float = A_SI_A) -> Path:
    """Si at (0, 0, 0) under 'F d -3 m', no operations, no Hall symbol."""
    return write(tmp_path, cif_text("_symmetry_space_group_name_H-M 'F d -3 m'", ["Si1 Si 0 0 0 1.0"], a_A, extra))


def f_squared(structure, hkl) -> float:
    """|F(hkl)|^2 (e^2) of a cubic structure at d = a / |hkl|."""
    crystal = structure.crystal
    return crystal.structure_factor_squared(hkl, crystal.a / math.sqrt(sum(h * h for h in hkl)))


def form_factor(element: str, hkl, a_A: float) -> float:
    """xraylib's form factor at s = |hkl| / (2 a) (1/A)."""
    return xraylib.FF_Rayl(xraylib.SymbolToAtomicNumber(element), math.sqrt(sum(h * h for h in hkl)) / (2 * a_A))


def test_wyckoff_si_is_taken_as_origin_choice_1_and_the_notice_names_both(tmp_path):
    """Origin choice 1 puts Si on 8a: the diamond bond a sqrt(3)/4 = 2.352 A, Z = 8, 2.329
    g/cm^3. Origin choice 2 puts it on 16c: 16 atoms, neighbours a sqrt(2)/4 = 1.920 A apart
    (0.86 of the Si-Si covalent radii 2 x 1.11 A), 4.659 g/cm^3 (2 x 2.3294 with xraylib's
    atomic weight 28.0855). Origin choice 1 is taken."""
    structure = read_cif(wyckoff_si(tmp_path))
    assert structure.space_group.xhm() == "F d -3 m:1"
    assert (structure.formula, structure.formula_units, len(structure.crystal.atoms)) == ("Si", 8, 8)
    assert structure.density_g_cm3 == pytest.approx(SI_DENSITY, rel=1e-3)
    (notice,) = structure.notices
    assert "origin choice 1 (F d -3 m:1) gives Z = 8 x Si, 2.329 g/cm^3" in notice
    assert "origin choice 2 (F d -3 m:2) gives Z = 16 x Si, 4.659 g/cm^3" in notice
    assert "Taken: origin choice 1, whose atoms do not overlap" in notice
    assert f"{A_SI_A * math.sqrt(2) / 4:.3f} A apart, 0.86 times" in notice
    assert f"{A_SI_A * math.sqrt(3) / 4:.3f} A apart, 1.06 times" in notice
    assert "the CIF gives none of _space_group_IT_coordinate_system_code, _cell_formula_units_Z" in notice


def test_origin_choice_1_gives_the_silicon_reflections(tmp_path):
    """With origin choice 1: 111 and 220 present, 200 absent (d-glide) and 222 extinct
    (|F|^2 ~ 0), the table as for the bundled Si (origin choice 2, Si at 1/8 1/8 1/8).
    Origin choice 2 on the same coordinates (Z = 16 decides it) would lose 220 and make 222
    the brightest: the issue's symptom."""
    structure = read_cif(wyckoff_si(tmp_path))
    table = reflection_table(structure, 17.0, Instrument(0.0, 60.0))
    rows = {r.hkl: r for r in table.reflections}
    assert (1, 1, 1) in rows and (2, 2, 0) in rows
    assert (2, 0, 0) not in rows and (2, 2, 2) not in rows
    f111 = f_squared(structure, (1, 1, 1))
    assert f_squared(structure, (2, 0, 0)) < 1e-12 * f111 and f_squared(structure, (2, 2, 2)) < 1e-12 * f111
    bundled = {r.hkl: r.f_squared for r in reflection_table(read_cif("Si"), 17.0, Instrument(0.0, 60.0)).reflections}
    assert {hkl: r.f_squared for hkl, r in rows.items()} == pytest.approx(bundled, rel=1e-9)
    wrong = reflection_table(read_cif(wyckoff_si(tmp_path, "_cell_formula_units_Z 16")), 17.0, Instrument(0.0, 60.0))
    wrong_rows = {r.hkl: r for r in wrong.reflections}
    assert (2, 2, 0) not in wrong_rows and wrong_rows[(2, 2, 2)].relative_intensity == 100.0


@pytest.mark.parametrize("extra, choice, decided_by", [
    ("_cell_formula_units_Z 8", 1, "_cell_formula_units_Z = 8"),
    ("_exptl_crystal_density_diffrn 2.329", 1, "_exptl_crystal_density_diffrn = 2.329 g/cm^3"),
    ("_cell_formula_units_Z 8\n_exptl_crystal_density_diffrn 2.329(1)", 1,
     "_cell_formula_units_Z = 8 and _exptl_crystal_density_diffrn = 2.329(1) g/cm^3"),
    ("_chemical_formula_sum 'Si2'\n_cell_formula_units_Z 4", 1, "_cell_formula_units_Z = 4"),  # 4 x Si2 = 8 Si
    ("_cell_formula_units_Z 16", 2, "_cell_formula_units_Z = 16"),
    ("_exptl_crystal_density_diffrn 4.66", 2, "_exptl_crystal_density_diffrn = 4.66 g/cm^3"),
    ("_space_group_IT_coordinate_system_code '2'", 2, "_space_group_IT_coordinate_system_code = 2"),
])
def test_the_cifs_items_decide_and_the_notice_says_so(tmp_path, extra, choice, decided_by):
    """Z (with the formula, if given), the measured density or the coordinate system code
    decide, even against the contacts (origin choice 2 puts Si 1.92 A apart)."""
    structure = read_cif(wyckoff_si(tmp_path, extra))
    z = {1: 8, 2: 16}[choice]
    assert structure.space_group.xhm() == f"F d -3 m:{choice}"
    assert (structure.formula_units, len(structure.crystal.atoms)) == (z, z)
    assert structure.density_g_cm3 == pytest.approx(z / 8 * SI_DENSITY, rel=1e-3)
    (notice,) = structure.notices
    assert "origin choice 1 (F d -3 m:1) gives Z = 8 x Si, 2.329 g/cm^3" in notice
    assert "origin choice 2 (F d -3 m:2) gives Z = 16 x Si, 4.659 g/cm^3" in notice
    assert notice.endswith(f"Taken: origin choice {choice}, decided by the CIF's {decided_by}.")


@pytest.mark.parametrize("extra, said", [
    ("_cell_formula_units_Z 5", "the CIF's _cell_formula_units_Z = 5 fits neither choice"),
    ("_cell_formula_units_Z 16\n_exptl_crystal_density_diffrn 2.329",
     "the CIF's _cell_formula_units_Z = 16 fits origin choice 2, _exptl_crystal_density_diffrn = 2.329 g/cm^3 fits "
     "origin choice 1"),
])
def test_items_that_fit_neither_or_disagree_do_not_decide(tmp_path, extra, said):
    structure = read_cif(wyckoff_si(tmp_path, extra))
    assert structure.space_group.xhm() == "F d -3 m:1"
    (notice,) = structure.notices
    assert f"Taken: origin choice 1, whose atoms do not overlap: {said}, and origin choice 2 puts atoms too " in notice


def test_an_implausible_choice_is_not_taken(tmp_path):
    """Si squeezed to a = 2.65 A: origin choice 1 gives 20.05 g/cm^3 (within the plausible
    range), origin choice 2 twice that: origin choice 1 is taken, origin choice 2's refusal
    named; if Z decides for origin choice 2 it is refused; at a = 2.0 A neither is plausible."""
    structure = read_cif(wyckoff_si(tmp_path, a_A=2.65))
    assert structure.space_group.xhm() == "F d -3 m:1"
    (notice,) = structure.notices
    assert "origin choice 2 is implausible: CIF" in notice and "density 40.1 g/cm^3" in notice
    with pytest.raises(ImplausibleInputError, match=r"density 40\.1 g/cm\^3 .*origin choice 2 is decided by the CIF's "
                                                     r"_cell_formula_units_Z = 16"):
        read_cif(wyckoff_si(tmp_path, "_cell_formula_units_Z 16", a_A=2.65))
    with pytest.raises(ImplausibleInputError, match=r"neither gives a plausible structure: origin choice 1: .*46\.64 "
                                                     r"g/cm\^3.*; origin choice 2: .*93\.29 g/cm\^3"):
        read_cif(wyckoff_si(tmp_path, a_A=2.0))


def test_when_nothing_decides_it_is_said_plainly(tmp_path):
    """Cu on a general position of P n -3 in a 20 A cell: 24 atoms with either origin, same
    Z and density, no contact shorter than the covalent radii: origin choice 2 (gemmi's
    reading) is taken and the notice says nothing decided it."""
    text = cif_text("_symmetry_space_group_name_H-M 'P n -3'", ["Cu1 Cu 0.1 0.2 0.3 1.0"], 20.0)
    structure = read_cif(write(tmp_path, text))
    assert structure.space_group.xhm() == "P n -3:2"
    (notice,) = structure.notices
    assert "origin choice 1 (P n -3:1) gives Z = 24 x Cu" in notice
    assert "origin choice 2 (P n -3:2) gives Z = 24 x Cu" in notice
    assert "Taken: origin choice 2, but nothing decides" in notice
    assert "check the origin of the coordinates in the CIF's source" in notice


def _symops(xhm: str) -> str:
    ops = gemmi.find_spacegroup_by_name(xhm).operations()
    return "loop_\n_space_group_symop_operation_xyz\n" + "\n".join(f"'{op.triplet()}'" for op in ops)


@pytest.mark.parametrize("symmetry", [
    "_symmetry_space_group_name_H-M 'F d -3 m'\n" + _symops("F d -3 m:1"),  # the operations decide
    "_symmetry_space_group_name_H-M 'F d -3 m'\n_space_group_name_Hall 'F 4d 2 3 -1d'",  # the Hall symbol
    "_symmetry_space_group_name_H-M 'F d -3 m :1'",  # the symbol's suffix
])
def test_a_cif_that_fixes_the_origin_gets_no_notice(tmp_path, symmetry):
    structure = read_cif(write(tmp_path, cif_text(symmetry, ["Si1 Si 0 0 0 1.0"])))
    assert structure.notices == ()
    assert (structure.formula_units, structure.space_group.xhm()) == (8, "F d -3 m:1")


@pytest.mark.parametrize("name", bundled_cif_names())
def test_the_bundled_cifs_get_no_notice(name):
    """Every bundled CIF gives its Hall symbol: nothing is left open."""
    assert read_cif(name).notices == ()


def test_dfxrm_warns_of_the_origin_choice(tmp_path, capsys):
    """``xrd-bluesky dfxrm`` prints the notice as a warning line; the plan is Si's."""
    assert main(["dfxrm", str(wyckoff_si(tmp_path)), "--energy-keV", "17", "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("xrd-bluesky dfxrm: warning: CIF")]
    assert len(warning) == 1
    assert "origin choice 1 (F d -3 m:1) gives Z = 8 x Si, 2.329 g/cm^3" in warning[0]
    assert "origin choice 2 (F d -3 m:2) gives Z = 16 x Si, 4.659 g/cm^3" in warning[0]
    assert "Taken: origin choice 1" in warning[0]
    assert "(Si, F d -3 m:1, Z = 8, 2.329" in captured.out
    assert "proposed (brightest reachable) reflection: (2 2 0)" in captured.out
    assert main(["dfxrm", "Si", "--energy-keV", "17", "-o", str(tmp_path / "out")]) == 0
    assert "warning" not in capsys.readouterr().err


def bundled_si_with(sites: list[str], a_A: float = A_SI_A) -> str:
    """The bundled Si (origin choice 2 by its Hall symbol, site 8a at 1/8 1/8 1/8) with other sites."""
    text = Path(read_cif("Si").source).read_text().replace("Si1 Si 0.125 0.125 0.125 1.0", "\n".join(sites))
    return text.replace(str(A_SI_A), str(a_A))


def test_a_shared_site_scatters_as_the_occupancy_weighted_mean(tmp_path):
    """Si0.5Ge0.5 (a = 5.544 A, Vegard): Si and Ge at 0.5 each on 8a. By hand,
    |F|^2 = |G|^2 (0.5 f_Si + 0.5 f_Ge)^2 with the diamond lattice sum |G|^2 = 32 for
    h, k, l odd, 64 for h + k + l = 4n, 0 for 4n + 2; the density is
    8 x (0.5 M_Si + 0.5 M_Ge) / (N_A a^3); gemmi's IT92 calculation agrees within 1 %."""
    a_A = 5.544
    cif = write(tmp_path, bundled_si_with(["Si1 Si 0.125 0.125 0.125 0.5", "Ge1 Ge 0.125 0.125 0.125 0.5"], a_A))
    structure = read_cif(cif)
    assert (structure.formula, structure.formula_units, len(structure.crystal.atoms)) == ("Si0.5Ge0.5", 8, 16)
    assert structure.notices == ()
    density = 8 * (WEIGHT["Si"] + WEIGHT["Ge"]) / 2 / (N_A * a_A**3 * 1e-24)
    assert structure.density_g_cm3 == pytest.approx(density, rel=1e-3)
    small = gemmi.read_small_structure(str(cif))
    small.change_occupancies_to_crystallographic()
    calc = gemmi.StructureFactorCalculatorX(small.cell)
    for hkl, lattice_sum in (((1, 1, 1), 32), ((2, 2, 0), 64), ((3, 1, 1), 32), ((4, 0, 0), 64), ((2, 2, 2), 0)):
        mean_f = 0.5 * form_factor("Si", hkl, a_A) + 0.5 * form_factor("Ge", hkl, a_A)
        assert f_squared(structure, hkl) == pytest.approx(lattice_sum * mean_f**2, rel=1e-9, abs=1e-9)
        if lattice_sum:
            gemmi_f2 = abs(calc.calculate_sf_from_small_structure(small, list(hkl))) ** 2
            assert f_squared(structure, hkl) == pytest.approx(gemmi_f2, rel=0.01)


def test_half_occupied_si_has_half_the_amplitude_and_density(tmp_path):
    """Every |F|^2 is a quarter of full Si's; density 2.329 / 2; formula Si0.5."""
    structure = read_cif(write(tmp_path, bundled_si_with(["Si1 Si 0.125 0.125 0.125 0.5"])))
    full = read_cif("Si")
    assert (structure.formula, structure.formula_units) == ("Si0.5", 8)
    assert structure.density_g_cm3 == pytest.approx(full.density_g_cm3 / 2, rel=1e-12)
    for hkl in ((1, 1, 1), (2, 2, 0), (3, 1, 1), (4, 0, 0), (5, 3, 1)):
        assert f_squared(structure, hkl) == pytest.approx(f_squared(full, hkl) / 4, rel=1e-12)


def test_wustite_vacancies_enter_f_composition_and_attenuation(tmp_path):
    """Fe0.95O (rock salt, a = 4.30 A, 5 % Fe vacancies): |F(200)|^2 = 16 (0.95 f_Fe + f_O)^2,
    |F(111)|^2 = 16 (0.95 f_Fe - f_O)^2; Z = 4; density 4 (0.95 M_Fe + M_O) / (N_A a^3); the
    attenuation uses the same composition (mass fractions of Fe0.95O)."""
    a_A = 4.30
    text = cif_text("_space_group_name_H-M_alt 'F m -3 m'\n_space_group_name_Hall '-F 4 2 3'",
                    ["Fe1 Fe 0 0 0 0.95", "O1 O 0.5 0.5 0.5 1.0"], a_A)
    structure = read_cif(write(tmp_path, text))
    assert (structure.formula, structure.formula_units, len(structure.crystal.atoms)) == ("Fe0.95O", 4, 8)
    density = 4 * (0.95 * WEIGHT["Fe"] + WEIGHT["O"]) / (N_A * a_A**3 * 1e-24)
    assert structure.density_g_cm3 == pytest.approx(density, rel=1e-3)
    for hkl, sign in (((2, 0, 0), 1), ((1, 1, 1), -1), ((2, 2, 0), 1), ((3, 1, 1), -1)):
        by_hand = 16 * (0.95 * form_factor("Fe", hkl, a_A) + sign * form_factor("O", hkl, a_A)) ** 2
        assert f_squared(structure, hkl) == pytest.approx(by_hand, rel=1e-9)
    energy_keV = 17.0
    mass_fe, mass_o = 0.95 * WEIGHT["Fe"], WEIGHT["O"]  # g/mol per formula unit
    mu_rho = (mass_fe * xraylib.CS_Total(26, energy_keV) + mass_o * xraylib.CS_Total(8, energy_keV)) / (
        mass_fe + mass_o)
    length_um = attenuation_length_um(material_of(structure), energy_keV)
    assert length_um == pytest.approx(1e4 / (mu_rho * density), rel=2e-3)


def test_a_site_split_around_its_special_position_is_accepted(tmp_path):
    """Fe displaced by 0.13 A from 4a towards the six <100> directions, 1/6 each: six
    alternatives 0.18-0.26 A apart, accepted because they add up to one atom."""
    text = cif_text("_space_group_name_H-M_alt 'F m -3 m'\n_space_group_name_Hall '-F 4 2 3'",
                    ["Fe1 Fe 0.03 0 0 0.1667", "O1 O 0.5 0.5 0.5 1.0"], 4.30)
    structure = read_cif(write(tmp_path, text))
    assert (structure.formula, structure.formula_units, len(structure.crystal.atoms)) == ("FeO", 4, 28)


@pytest.mark.parametrize("sites, match", [
    (["Si1 Si 0.125 0.125 0.125 0.5", "Ge1 Ge 0.125 0.125 0.125 0.7"],
     r"sites Si1 and Ge1 .* same position \(0\.1250, 0\.1250, 0\.1250\) .* add up to 1\.2, more than 1"),
    (["Si1 Si 0.125 0.125 0.125 0.4", "Ge1 Ge 0.125 0.125 0.125 0.4", "C1 C 0.125 0.125 0.125 0.4"],
     r"add up to 1\.2, more than 1: a site listed twice"),
    # Ge1 off 8a: six of its images (0.6 each) around Si1 (0.5)
    (["Si1 Si 0.125 0.125 0.125 0.5", "Ge1 Ge 0.135 0.125 0.125 0.6"],
     r"0\.054 A apart, closer than 0\.5 A .*adding up to 4\.1, more than 1"),
    (["Si1 Si 0.125 0.125 0.125 1.5"], r"site Si1 .*_atom_site_occupancy = 1\.5 is outside the plausible range 0-1"),
    (["Si1 Si 0.125 0.125 0.125 0"], r"_atom_site_occupancy = 0 is outside the plausible range 0-1"),
    (["Si1 Si 0.125 0.125 0.125 -0.2"], r"_atom_site_occupancy = -0\.2 is outside"),
])
def test_impossible_occupancies_are_refused(tmp_path, sites, match):
    with pytest.raises(ImplausibleInputError, match=match):
        read_cif(write(tmp_path, bundled_si_with(sites)))


def test_a_strained_crystal_keeps_its_occupancies(tmp_path):
    structure = read_cif(write(tmp_path, bundled_si_with(["Si1 Si 0.125 0.125 0.125 0.5"])))
    strained = structure.crystal.strained(0.01)
    assert isinstance(strained, Crystal) and strained.atoms == structure.crystal.atoms
    assert strained.a == pytest.approx(1.01 * A_SI_A)
    hkl, d_A = (1, 1, 1), strained.a / math.sqrt(3)
    assert strained.structure_factor_squared(hkl, d_A) == pytest.approx(
        read_cif("Si").crystal.strained(0.01).structure_factor_squared(hkl, d_A) / 4, rel=1e-12)
    assert np.allclose([atom.occupancy for atom in strained.atoms], 0.5)
