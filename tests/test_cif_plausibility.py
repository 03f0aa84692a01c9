"""CIF plausibility ("never a silent wrong result"): a site listed twice, cell angles in
radians, a negative displacement parameter, atoms on top of each other or an impossible
density are refused with a domain error naming the value; every bundled CIF still reads,
with the density of its composition; and mutated CIFs (any cell, coordinate or U) either
raise a domain error or give a structure of plausible density.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from xrd_bluesky.errors import (
    ImplausibleInputError,
    PlausibilityWarning,
    SampleError,
    XRDBlueskyError,
)
from xrd_bluesky.science.dfxrm.cif_structure import (
    DENSITY_RANGE_G_CM3,
    bundled_cif_names,
    read_cif,
)

#: Densities (g/cm^3) computed by hand, Z x M / (N_A V), with IUPAC standard atomic weights
#: (Si 28.085, Al 26.9815, O 15.999, K 39.0983, Nb 92.906, Li 6.94, Y 88.906, Mn 54.938)
#: and the CIFs' cells: Si 8 x 28.085 in 160.193 A^3; Al2O3 6 x 101.960 in 254.977 A^3
#: (a^2 c sin 120); KNbO3 2 x 180.002 in 129.368 A^3; LiNbO3 6 x 147.843 in 318.212 A^3;
#: YMnO3 6 x 191.841 in 372.271 A^3.
REFERENCE_DENSITY_G_CM3 = {"Si": 2.3290, "Al2O3": 3.9841, "KNbO3": 4.6209, "LiNbO3": 4.6290, "YMnO3": 5.1343}

SI_SITE = "Si1 Si 0.125 0.125 0.125 1.0"
U_COLUMN = "_atom_site_occupancy\n_atom_site_U_iso_or_equiv"


def bundled_text(name: str) -> str:
    """The text of a bundled CIF."""
    return Path(read_cif(name).source).read_text()


def with_cell(text: str, **values: float | str) -> str:
    """``text`` with the cell parameters named (``length_a``, ``angle_beta``...) replaced."""
    lines = []
    for line in text.splitlines():
        key = line.split()[0] if line.strip() else ""
        name = key.removeprefix("_cell_")
        lines.append(f"{key} {values[name]}" if key.startswith("_cell_") and name in values else line)
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str, name: str = "bad.cif") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def si_with_u(u: str, tag: str = "_atom_site_U_iso_or_equiv") -> str:
    """Si with one displacement parameter column."""
    return bundled_text("Si").replace("_atom_site_occupancy", f"_atom_site_occupancy\n{tag}").replace(
        SI_SITE, f"{SI_SITE} {u}")


@pytest.mark.parametrize("name", sorted(REFERENCE_DENSITY_G_CM3))
def test_bundled_cifs_read_with_the_density_of_their_composition(name):
    assert set(bundled_cif_names()) == set(REFERENCE_DENSITY_G_CM3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlausibilityWarning)
        structure = read_cif(name)
    assert structure.density_g_cm3 == pytest.approx(REFERENCE_DENSITY_G_CM3[name], rel=0.01)


@pytest.mark.parametrize("second_site, position", [
    ("Si2 Si 0.125 0.125 0.125 1.0", "(0.1250, 0.1250, 0.1250)"),  # the same line under another label
    ("Si2 Si 0.875 0.875 0.875 1.0", "(0.1250, 0.1250, 0.1250)"),  # a symmetry image of Si1 (8a of Fd-3m:2)
    ("O1 O 0.1251 0.125 0.125 1.0", "(0.1250, 0.1250, 0.1250)"),  # another element, 0.0005 A away
])
def test_a_site_listed_twice_is_refused(tmp_path, second_site, position):
    cif = write(tmp_path, bundled_text("Si").replace(SI_SITE, f"{SI_SITE}\n{second_site}"))
    with pytest.raises(ImplausibleInputError, match="listed twice") as error:
        read_cif(cif)
    message = str(error.value)
    assert str(cif) in message and "Si1" in message and second_site.split()[0] in message
    assert position in message


def test_a_duplicate_with_other_coordinates_is_refused(tmp_path):
    """Si2 0.01 (fractional) = 0.054 A from Si1: atoms closer than 0.5 A."""
    cif = write(tmp_path, bundled_text("Si").replace(SI_SITE, f"{SI_SITE}\nSi2 Si 0.135 0.125 0.125 1.0"))
    with pytest.raises(ImplausibleInputError, match=r"0\.054 A apart, closer than 0\.5 A") as error:
        read_cif(cif)
    assert "Si1" in str(error.value) and "Si2" in str(error.value)


def test_a_site_off_its_special_position_is_refused(tmp_path):
    """Al2O3's Al on 12c (0, 0, z) given at x = 0.02: two of its images are 0.165 A apart."""
    text = bundled_text("Al2O3").replace("Al1 Al 0.0     0.0 0.35216", "Al1 Al 0.02    0.0 0.35216")
    with pytest.raises(ImplausibleInputError, match=r"0\.165 A apart, closer than 0\.5 A") as error:
        read_cif(write(tmp_path, text))
    assert "sites Al1 at" in str(error.value)


def test_cell_angles_in_radians_are_refused(tmp_path):
    text = with_cell(bundled_text("Si"), angle_alpha=1.5708, angle_beta=1.5708, angle_gamma=1.5708)
    with pytest.raises(ImplausibleInputError, match=r"_cell_angle_alpha = 1\.5708 deg .*radians\?"):
        read_cif(write(tmp_path, text))


@pytest.mark.parametrize("angles, match", [
    ((0, 90, 90), "_cell_angle_alpha = 0 deg is outside the plausible range 5-175 deg"),
    ((90, 180, 90), "_cell_angle_beta = 180 deg is outside"),
    ((90, 90, -120), "_cell_angle_gamma = -120 deg is outside"),
    ((125, 125, 125), r"make no cell"),  # the three add up to more than 360 deg
    ((30, 30, 100), r"make no cell"),  # gamma is more than alpha + beta
    ((119.99, 119.99, 119.99), r"only 0\.1\d+ A thick across"),  # nearly flat (sum near 360)
])
def test_cell_angles_that_make_no_cell_are_refused(tmp_path, angles, match):
    text = with_cell(bundled_text("Si"), angle_alpha=angles[0], angle_beta=angles[1], angle_gamma=angles[2])
    with pytest.raises(ImplausibleInputError, match=match):
        read_cif(write(tmp_path, text))


@pytest.mark.parametrize("length, match", [
    (-5.431, "_cell_length_b = -5.431 A is outside the plausible range 1-1000 A"),
    (0, "_cell_length_b = 0 A is outside"),
    (0.5431, "_cell_length_b = 0.5431 A is outside"),  # in nm
    (5431.0, "_cell_length_b = 5431 A is outside"),  # in pm
    ("abc", "_cell_length_b = nan A is outside"),
])
def test_implausible_cell_lengths_are_refused(tmp_path, length, match):
    with pytest.raises(ImplausibleInputError, match=match):
        read_cif(write(tmp_path, with_cell(bundled_text("Si"), length_b=length)))


@pytest.mark.parametrize("missing", ["_cell_length_c", "_cell_angle_beta"])
def test_a_missing_cell_parameter_is_refused(tmp_path, missing):
    """gemmi would silently take a 1 A cubic cell."""
    text = "\n".join(line for line in bundled_text("Si").splitlines() if not line.startswith(missing))
    with pytest.raises(SampleError, match=f"gives no {missing}"):
        read_cif(write(tmp_path, text))


@pytest.mark.parametrize("column, value, match", [
    ("_atom_site_U_iso_or_equiv", "-0.0100", r"site Si1 .*U_iso = -0\.01 A\^2 .* is negative"),
    ("_atom_site_B_iso_or_equiv", "-0.80", r"site Si1 .*B_iso = -0\.8 A\^2\) is negative"),
])
def test_a_negative_displacement_parameter_is_refused(tmp_path, column, value, match):
    with pytest.raises(ImplausibleInputError, match=match):
        read_cif(write(tmp_path, si_with_u(value, column)))


def test_a_negative_u_within_rounding_is_zero(tmp_path):
    structure = read_cif(write(tmp_path, si_with_u("-0.00005")))
    assert {atom.b_iso_A2 for atom in structure.crystal.atoms} == {0.0}


def test_an_implausibly_large_u_is_reported(tmp_path):
    with pytest.warns(PlausibilityWarning, match=r"site Si1 .*U_iso = 1\.5 A\^2 .*above 1 A\^2"):
        structure = read_cif(write(tmp_path, si_with_u("1.5")))
    assert structure.crystal.atoms[0].b_iso_A2 == pytest.approx(8 * math.pi**2 * 1.5)


@pytest.mark.parametrize("a_A, density", [(2.2, "35.04"), (54.31, "0.002329")])
def test_an_implausible_density_is_refused(tmp_path, a_A, density):
    """Si with a = 2.2 A (bonds 0.95 A, within every other check) or ten times too large."""
    text = with_cell(bundled_text("Si"), length_a=a_A, length_b=a_A, length_c=a_A)
    with pytest.raises(ImplausibleInputError, match="outside the plausible range 0.05-25 g/cm") as error:
        read_cif(write(tmp_path, text))
    message = str(error.value)
    assert f"density {density} g/cm^3" in message and "Z = 8 x Si" in message
    assert f"{a_A**3:.4g} A^3" in message


TEMPLATE = bundled_text("Al2O3").replace("_atom_site_occupancy", U_COLUMN)
#: The numbers of the template that the mutations change: cell, coordinates and U of each site.
USUAL = {"length_a": 4.7602, "length_b": 4.7602, "length_c": 12.9933,
         "angle_alpha": 90.0, "angle_beta": 90.0, "angle_gamma": 120.0,
         "Al1 x": 0.0, "Al1 y": 0.0, "Al1 z": 0.35216, "Al1 U": 0.005,
         "O1 x": 0.30624, "O1 y": 0.0, "O1 z": 0.25, "O1 U": 0.005}
SITES = {"Al1": "Al", "O1": "O"}


def mutation(usual: float) -> st.SearchStrategy:
    """A value instead of ``usual``: scaled (a factor of 2 either way), shifted a little,
    taken for radians, any float (NaN, infinities, huge) or text that is no number."""
    return st.one_of(st.floats(0.5, 2.0).map(lambda f: usual * f), st.floats(-0.05, 0.05).map(lambda d: usual + d),
                     st.just(math.radians(usual)), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from(["?", ".", "x"]))


@st.composite
def mutated_cifs(draw) -> str:
    """Al2O3 (with U = 0.005 A^2) with up to three of its cell parameters, coordinates and
    U values replaced."""
    values = dict(USUAL)
    for key in draw(st.lists(st.sampled_from(sorted(USUAL)), max_size=3, unique=True)):
        values[key] = draw(mutation(USUAL[key]))
    rows = [" ".join([label, element, *(str(values[f"{label} {k}"]) for k in "xyz"), "1.0", str(values[f"{label} U"])])
            for label, element in SITES.items()]
    text = TEMPLATE[:TEMPLATE.index("Al1 Al")] + "\n".join(rows) + "\n"
    return with_cell(text, **{key: value for key, value in values.items() if " " not in key})


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_cifs())
def test_mutated_cifs_give_a_domain_error_or_a_plausible_density(tmp_path, text):
    cif = write(tmp_path, text, "mutated.cif")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PlausibilityWarning)
            structure = read_cif(cif)
    except XRDBlueskyError as exc:
        event(type(exc).__name__)
        return
    event("read")
    low, high = DENSITY_RANGE_G_CM3
    assert low <= structure.density_g_cm3 <= high
    assert all(atom.b_iso_A2 >= 0 for atom in structure.crystal.atoms)
