"""DF-XRM planning, goniometer side: the solved angles satisfy k_out = k_in + G with
|k_out| = |k_in| in the instrument's scattering plane, the chosen solution turns the exit
facet as far downstream as the family allows (else has the smallest |chi|), the deviation
function and the rocking sensitivities measure rocking offsets, and bad requests fail."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xrd_bluesky.errors import GeometryError
from xrd_bluesky.science.dfxrm.cif_structure import read_cif
from xrd_bluesky.science.dfxrm.orientation import (
    Facet,
    GoniometerAngles,
    Mounting,
    OrientationSolution,
    b_matrix,
    bragg_condition,
    orient,
    rocking_sensitivity,
    target_direction,
)
from xrd_bluesky.science.dfxrm.reflection_table import Instrument, reflection_table

ENERGY_KEV = 17.0
MOUNTINGS = {
    "Si": Mounting(Facet((1, 1, 1)), Facet((1, 1, -2))),
    "Al2O3": Mounting(Facet((0, 0, 1)), Facet((1, 0, 0), "uvw")),
    "LiNbO3": Mounting(Facet((0, 0, 1)), Facet((1, 1, 0))),
    "KNbO3": Mounting(Facet((0, 1, 1)), Facet((1, 0, 0), "uvw")),
    "YMnO3": Mounting(Facet((0, 0, 1), "uvw"), Facet((1, 1, 0), "hkl")),
}


@pytest.mark.parametrize("name", ["Si", "Al2O3", "KNbO3", "YMnO3"])
def test_b_matrix_is_busing_levy(name):
    """B^T B is the reciprocal metric (|B h| = 1/d), B is upper triangular, a* along x."""
    crystal = read_cif(name).crystal
    b = b_matrix(crystal)
    assert np.allclose(b.T @ b, crystal.reciprocal_metric(), rtol=1e-12, atol=1e-15)
    assert np.allclose(np.tril(b, -1), 0.0) and np.all(np.diag(b) > 0)


@pytest.mark.parametrize("plane", ["vertical", "horizontal"])
@pytest.mark.parametrize("name", ["Si", "Al2O3", "LiNbO3", "KNbO3", "YMnO3"])
def test_angles_put_every_reflection_in_condition(name, plane):
    """For every reflection of the table: deviation < 1e-6 deg, k_out = k_in + G on the
    Ewald sphere (|k_out| = |k_in|), in the scattering plane, on the upper (vertical) or
    +y (horizontal) side, at the reflection's 2theta from the beam."""
    table = reflection_table(read_cif(name), ENERGY_KEV, Instrument(2.0, 40.0, plane))
    k = 1 / table.wavelength_A
    worst = 0.0
    for r in table.reflections:
        sol = orient(table, r.hkl, MOUNTINGS[name])
        c = sol.condition
        worst = max(worst, abs(c.deviation_deg))
        k_out = np.array([k, 0, 0]) + c.scattering_vector_per_A
        assert np.allclose(c.k_out_per_A, k_out, rtol=0, atol=1e-15)
        assert np.linalg.norm(k_out) == pytest.approx(k, rel=1e-12)
        out_of_plane, side = (k_out[1], k_out[2]) if plane == "vertical" else (k_out[2], k_out[1])
        assert abs(out_of_plane) < 1e-12 * k and side > 0
        assert math.degrees(math.acos(k_out[0] / k)) == pytest.approx(r.two_theta_deg, abs=1e-9)
        g_lab = sol.angles.rotation() @ sol.ub @ np.array(r.hkl, dtype=float)
        assert np.allclose(g_lab / np.linalg.norm(g_lab), target_direction(r.two_theta_deg, plane), atol=1e-12)
    assert worst < 1e-6


@pytest.mark.parametrize("plane", ["vertical", "horizontal"])
@pytest.mark.parametrize("name", ["Si", "Al2O3", "KNbO3", "YMnO3"])
def test_exit_facet_is_as_far_downstream_as_the_family_allows(name, plane):
    """Turning the chosen solution about the target direction (which keeps the Bragg
    condition) never brings the exit normal closer to +x, on a 0.01 deg grid; of the
    two Euler branches of the rotation, the one with the smaller |phi| is chosen."""
    table = reflection_table(read_cif(name), ENERGY_KEV, Instrument(2.0, 40.0, plane))
    psi = np.radians(np.arange(-180, 180, 0.01))
    for r in table.reflections[:6]:
        sol = orient(table, r.hkl, MOUNTINGS[name])
        a = sol.angles
        t = target_direction(r.two_theta_deg, plane)
        n = a.rotation()[:, 0]
        # Rodrigues about t for every psi at once: n_x(psi)
        n_x = n[0] * np.cos(psi) + np.cross(t, n)[0] * np.sin(psi) + t[0] * (t @ n) * (1 - np.cos(psi))
        assert n_x.max() <= n[0] + 1e-12
        other = GoniometerAngles(a.omega_deg + 180, -a.chi_deg, a.phi_deg + 180)
        assert np.allclose(other.rotation(), a.rotation(), atol=1e-12)
        assert abs(a.phi_deg) <= abs(math.remainder(a.phi_deg + 180, 360)) + 1e-9


def test_exit_normal_along_g_falls_back_to_the_smallest_chi():
    """A symmetric Bragg reflection (Si 400 with the (1 0 0) face as exit facet) leaves
    the exit normal on the target direction for every solution; then no phi on a fine
    grid admits a solution with smaller |chi| than the chosen one (solve
    v_y sin(chi) + v_z cos(chi) = t_z for v = Rz(phi) g)."""
    table = reflection_table(read_cif("Si"), ENERGY_KEV)
    sol = orient(table, (4, 0, 0), Mounting(Facet((0, 0, 1)), Facet((1, 0, 0))))
    t = target_direction(sol.reflection.two_theta_deg, "vertical")
    assert np.allclose(sol.angles.rotation()[:, 0], t, atol=1e-12)
    assert not sol.beam_path.laue  # the beam enters and leaves through the (1 0 0) face
    g = sol.ub @ np.array([4.0, 0.0, 0.0])
    g /= np.linalg.norm(g)
    best = math.inf
    for phi in np.radians(np.arange(-180, 180, 0.01)):
        v_y = g[0] * math.sin(phi) + g[1] * math.cos(phi)
        amplitude = math.hypot(v_y, g[2])
        if amplitude >= abs(t[2]):
            base, spread = math.atan2(v_y, g[2]), math.acos(t[2] / amplitude)
            best = min(best, *(abs(math.remainder(base + s * spread, 2 * math.pi)) for s in (1, -1)))
    assert abs(sol.angles.chi_deg) <= math.degrees(best) + 1e-6


def test_deviation_measures_a_rocking_offset():
    """Si 004 with (001) up: omega = 90, chi = -theta, phi = -90 (G tilted towards the
    beam about lab y, the exit facet downstream: a symmetric Laue slab); turning chi by
    -delta tilts G further by delta: deviation = +delta, and chi's rocking sensitivity is
    -1 while omega and phi do not rock."""
    table = reflection_table(read_cif("Si"), ENERGY_KEV)
    sol = orient(table, (0, 0, 4))
    theta = sol.reflection.two_theta_deg / 2
    a = sol.angles
    assert (a.omega_deg, a.chi_deg, a.phi_deg) == pytest.approx((90.0, -theta, -90.0), abs=1e-9)
    assert sol.beam_path.laue
    assert sol.beam_path.incident_um == pytest.approx(sol.beam_path.diffracted_um)
    assert sol.beam_path.incident_um == pytest.approx(100 / math.cos(math.radians(theta)))
    for delta in (0.001, 0.5, -0.2):
        rocked = GoniometerAngles(a.omega_deg, a.chi_deg - delta, a.phi_deg)
        assert bragg_condition(sol.ub, (0, 0, 4), rocked, table.wavelength_A).deviation_deg == pytest.approx(
            delta, abs=1e-9)
    sensitivity = rocking_sensitivity(sol.ub, (0, 0, 4), a)
    assert sensitivity == pytest.approx({"omega": 0.0, "chi": -1.0, "phi": 0.0}, abs=1e-12)


def _deviation_deg(sol: OrientationSolution, hkl: tuple[int, int, int], axis: str, offset_deg: float,
                   wavelength_A: float) -> float:
    """Deviation (deg) of ``hkl`` from the Bragg condition at ``sol``'s angles with ``axis``
    turned by ``offset_deg``."""
    a = sol.angles
    angles = {"omega": a.omega_deg, "chi": a.chi_deg, "phi": a.phi_deg}
    angles[axis] += offset_deg
    return bragg_condition(sol.ub, hkl, GoniometerAngles(angles["omega"], angles["chi"], angles["phi"]),
                           wavelength_A).deviation_deg


@pytest.mark.parametrize("plane", ["vertical", "horizontal"])
def test_rocking_sensitivity_is_the_derivative_of_the_deviation(plane):
    """For every Al2O3 reflection and axis, the sensitivity equals the central difference
    of the deviation over +-1e-4 deg of that axis."""
    table = reflection_table(read_cif("Al2O3"), ENERGY_KEV, Instrument(2.0, 40.0, plane))
    step = 1e-4
    for r in table.reflections:
        sol = orient(table, r.hkl, MOUNTINGS["Al2O3"])
        a = sol.angles
        sensitivity = rocking_sensitivity(sol.ub, r.hkl, a)
        for axis in ("omega", "chi", "phi"):
            ahead, behind = (_deviation_deg(sol, r.hkl, axis, offset, table.wavelength_A) for offset in (step, -step))
            assert sensitivity[axis] == pytest.approx((ahead - behind) / (2 * step), abs=1e-6)
        if plane == "horizontal":
            assert sensitivity["omega"] == pytest.approx(1.0, abs=1e-12)
        else:
            assert sensitivity["omega"] == pytest.approx(0.0, abs=1e-12)


def test_beam_path_in_the_slab():
    """Si 220 in the horizontal plane with (001) up: chi = phi = 0, the exit normal is at
    omega from the beam; paths t/cos(omega) in and t/cos(2theta - omega) out (Laue), and the
    depth-averaged transmission is the integral of exp(-path/L) over the depth."""
    table = reflection_table(read_cif("Si"), ENERGY_KEV, Instrument(scattering_plane="horizontal"))
    sol = orient(table, (2, 2, 0), thickness_um=200.0)
    a, tth = sol.angles, sol.reflection.two_theta_deg
    assert (a.chi_deg, a.phi_deg) == (0.0, 0.0)
    path = sol.beam_path
    assert path.laue
    assert path.incident_um == pytest.approx(200 / math.cos(math.radians(a.omega_deg)))
    assert path.diffracted_um == pytest.approx(200 / abs(math.cos(math.radians(tth - a.omega_deg))))
    depth = np.linspace(0, 200, 20001)
    rays = depth / math.cos(math.radians(a.omega_deg)) + (200 - depth) / abs(math.cos(math.radians(tth - a.omega_deg)))
    length = 150.0
    assert path.diffracted_transmission(length) == pytest.approx(np.trapezoid(np.exp(-rays / length), depth) / 200,
                                                                 rel=1e-8)
    assert path.incident_transmission(length) == pytest.approx(math.exp(-path.incident_um / length))


def test_facets_must_be_perpendicular():
    crystal = read_cif("Si").crystal
    with pytest.raises(GeometryError, match="45.000 deg apart, not perpendicular"):
        Mounting(Facet((0, 0, 1)), Facet((0, 1, 1))).u_matrix(crystal)
    with pytest.raises(GeometryError, match="not perpendicular"):
        Mounting(Facet((0, 0, 1)), Facet((100, 0, 1))).u_matrix(crystal)  # 89.43 deg
    with pytest.raises(GeometryError, match="89.742 deg apart"):  # orthorhombic b != c
        Mounting(Facet((0, 1, 1)), Facet((0, 1, -1))).u_matrix(read_cif("KNbO3").crystal)
    u = Mounting(Facet((0, 0, 1)), Facet((1000, 0, 1))).u_matrix(crystal)  # 89.94 deg: within 0.1 deg
    assert np.allclose(u @ u.T, np.eye(3)) and np.linalg.det(u) == pytest.approx(1.0)
    with pytest.raises(GeometryError, match="no direction"):
        Facet((0, 0, 0))


def test_mounting_puts_the_facets_on_the_lab_axes():
    """At zero angles the up facet normal is +z and the exit facet normal +x, for planes
    and directions, in a hexagonal cell."""
    crystal = read_cif("YMnO3").crystal
    b = b_matrix(crystal)
    mounting = Mounting(Facet((1, 1, 0)), Facet((1, -1, 0), "uvw"))
    u = mounting.u_matrix(crystal)
    up = u @ b @ np.array([1.0, 1.0, 0.0])
    exit_ = u @ np.linalg.inv(b).T @ np.array([1.0, -1.0, 0.0])
    assert np.allclose(up / np.linalg.norm(up), [0, 0, 1]) and np.allclose(exit_ / np.linalg.norm(exit_), [1, 0, 0])


def test_bad_reflections_are_refused():
    table = reflection_table(read_cif("Si"), ENERGY_KEV, Instrument(2.0, 40.0))
    with pytest.raises(GeometryError, match="outside the instrument's range 2-40 deg"):
        orient(table, (4, 4, 4))
    with pytest.raises(GeometryError, match="systematically absent"):
        orient(table, (2, 0, 0))
    with pytest.raises(GeometryError, match="forbidden"):
        orient(table, (2, 2, 2))
    with pytest.raises(GeometryError, match=r"\(0 0 0\)"):
        orient(table, (0, 0, 0))
    with pytest.raises(GeometryError, match="unreachable"):
        orient(table, (20, 20, 20))
    with pytest.raises(GeometryError, match="not perpendicular"):
        orient(table, (2, 2, 0), Mounting(Facet((1, 1, 1)), Facet((1, 0, 0))))
    with pytest.raises(GeometryError, match="outside the range 1-60 keV"):
        reflection_table(read_cif("Si"), 100.0)
    with pytest.raises(GeometryError, match="2theta range"):
        Instrument(40.0, 2.0)
