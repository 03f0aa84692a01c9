"""Goniometer angles that bring a reflection into the Bragg condition, for DF-XRM.

Axis convention
---------------
Lab frame: x along the beam (downstream), z up, y = z x x (to the left looking
downstream); right-handed. The goniometer (``Goniometer`` of
:mod:`xrd_bluesky.sim_devices.stage`) stacks three right-handed rotations,
omega (outermost) about lab z, chi about x as carried by omega, phi (innermost) about z
as carried by omega and chi:

    R(omega, chi, phi) = Rz(omega) . Rx(chi) . Rz(phi)

Mounting: at omega = chi = phi = 0 the sample's "up" facet normal points along +z and its
"beam exit" facet normal (the surface facing downstream) along +x. A facet is given by a
plane hkl (its normal, a reciprocal-lattice vector) or by a lattice direction [uvw].

Crystal to lab: a reflection hkl has the lab-frame scattering vector G = R . U . B . h
(1/A, |G| = 1/d, no 2 pi). B is the Busing & Levy (1967, Acta Cryst. 22, 457) matrix
taking hkl to Cartesian crystal coordinates (a* along x, b* in the x-y plane); direct
lattice vectors are (B^T)^-1 . uvw in the same frame. U is the rotation that takes the
"exit" facet normal to +x and the "up" facet normal to +z.

Bragg condition: k_in = (1/lambda) x, k_out = k_in + G, |k_out| = |k_in|. With the
diffracted beam in the vertical plane and upwards, k_out = (cos 2theta, 0, sin 2theta)/lambda
so G must point along (-sin theta, 0, cos theta); in the horizontal plane (diffracted beam
towards +y) along (-sin theta, cos theta, 0).

Choice among the solutions: R . g = t (g the unit G at zero angles, t the target
direction) has a one-parameter family of solutions (any extra rotation psi about t). We
take the one whose "beam exit" facet normal n = R . x is closest to +x (downstream), so
that the beam crosses the slab. With R0 any one solution and m = R0 . x, Rodrigues gives
n_x(psi) = a cos psi + b sin psi + t_x (t . m) with a = m_x - t_x (t . m) and
b = (t x m)_x, largest at psi = atan2(b, a). Each rotation has two (omega, chi, phi):
(omega, chi, phi) and (omega + 180, -chi, phi + 180); of these the smaller |phi| wins,
then omega in [0, 180); at chi = 0 or 180 only omega + phi counts and phi = 0. When n_x
does not depend on psi (a = b = 0: the exit normal along G, as in a symmetric Bragg
reflection, or t along the beam) the smallest |chi| decides, then the smallest |phi|:
|chi| can be no smaller than the difference of the elevations of g and t,
asin(t_z) - asin(g_z), and reaches it when phi turns g into the y-z plane (two choices,
+y or -y side; the smaller |phi| wins); if g already has t's elevation, chi = phi = 0.
Angles are in (-180, 180] deg. Example: with the reflection's plane as the "up" facet in
the vertical plane (the usual DF-XRM mounting), the exit normal can reach
(cos theta, 0, sin theta), and the angles are omega = 90, chi = -theta, phi = -90: chi
then turns about lab y, the axis that rocks the reflection; omega, about lab z, does not
in the vertical plane (see :func:`rocking_sensitivity`).

Beam path (slab model): the sample is a slab of thickness t between two faces whose
normal is the "beam exit" facet normal n. The incident beam crosses it along
t / |cos a_in|, a_in the angle between k_in and n. A ray diffracted at depth z (0 at the
entrance face) leaves through the exit face (Laue/transmission geometry, k_out on the
same side of the slab as k_in) after (t - z) / |cos a_out|, or back through the entrance
face (Bragg/reflection geometry) after z / |cos a_out|; the longest diffracted path is
t / |cos a_out|. Lateral faces are ignored (a slab much wider than the beam).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ...errors import GeometryError
from ..crystal import Crystal
from .reflection_table import ReflectionTable, TableReflection

#: Largest deviation from 90 deg (deg) accepted between the "up" and "exit" facet normals.
PERPENDICULAR_TOLERANCE_DEG = 0.1
#: Elevation difference (rad) below which chi = 0 solves the Bragg condition.
_ELEVATION_TOLERANCE_RAD = 1e-12
#: Amplitude of n_x(psi) below which the exit normal's direction does not pick a solution.
_DEGENERATE_TOLERANCE = 1e-9
#: sin(chi) below which chi is 0 or 180 deg (only omega + phi matters), and sin of the
#: angle below which two unit vectors are parallel.
_GIMBAL_TOLERANCE = 1e-12
#: Difference of |phi| (deg) below which two Euler branches tie.
_TIE_TOLERANCE_DEG = 1e-9


def b_matrix(crystal: Crystal) -> np.ndarray:
    """Busing & Levy B matrix (1/A) of ``crystal``: Cartesian G = B . hkl, |G| = 1/d.

    a* lies along x, b* in the x-y plane; B^T B is the reciprocal metric tensor.
    """
    gstar = crystal.reciprocal_metric()
    a_s, b_s, c_s = np.sqrt(np.diag(gstar))
    cos_al_s = gstar[1, 2] / (b_s * c_s)
    cos_be_s = gstar[0, 2] / (a_s * c_s)
    cos_ga_s = gstar[0, 1] / (a_s * b_s)
    sin_be_s = math.sqrt(1 - cos_be_s**2)
    sin_ga_s = math.sqrt(1 - cos_ga_s**2)
    cos_al = (cos_be_s * cos_ga_s - cos_al_s) / (sin_be_s * sin_ga_s)  # direct alpha
    return np.array([
        [a_s, b_s * cos_ga_s, c_s * cos_be_s],
        [0.0, b_s * sin_ga_s, -c_s * sin_be_s * cos_al],
        [0.0, 0.0, 1.0 / crystal.c],
    ])


@dataclass(frozen=True)
class Facet:
    """A sample facet: its outward normal as a plane ``hkl`` or a lattice direction ``uvw``."""

    indices: tuple[int, int, int]
    kind: Literal["hkl", "uvw"] = "hkl"

    def __post_init__(self) -> None:
        if self.kind not in ("hkl", "uvw"):
            raise GeometryError(f"facet kind {self.kind!r} is not 'hkl' or 'uvw'")
        if not any(self.indices):
            raise GeometryError(f"facet {self} has indices (0 0 0): no direction")

    def __str__(self) -> str:
        text = " ".join(str(v) for v in self.indices)
        return f"({text})" if self.kind == "hkl" else f"[{text}]"

    def unit_vector(self, b: np.ndarray) -> np.ndarray:
        """The facet normal as a Cartesian unit vector of the B-matrix frame ``b``."""
        v = np.asarray(self.indices, dtype=float)
        vec = b @ v if self.kind == "hkl" else np.linalg.inv(b).T @ v
        return vec / np.linalg.norm(vec)


@dataclass(frozen=True)
class Mounting:
    """How the crystal sits on the goniometer at zero angles.

    Attributes
    ----------
    up : Facet
        Facet whose normal points along +z (default: plane (0 0 1)).
    exit : Facet
        Facet facing downstream, normal along +x (default: direction [1 0 0], which is
        perpendicular to (0 0 1) in every lattice).
    """

    up: Facet = field(default_factory=lambda: Facet((0, 0, 1), "hkl"))
    exit: Facet = field(default_factory=lambda: Facet((1, 0, 0), "uvw"))

    def u_matrix(self, crystal: Crystal) -> np.ndarray:
        """Rotation U from Cartesian crystal coordinates (B frame) to the lab at zero angles.

        Raises
        ------
        GeometryError
            If the facet normals are not perpendicular within
            :data:`PERPENDICULAR_TOLERANCE_DEG`.
        """
        b = b_matrix(crystal)
        up, ex = self.up.unit_vector(b), self.exit.unit_vector(b)
        angle = math.degrees(math.acos(max(-1.0, min(1.0, float(up @ ex)))))
        if abs(angle - 90.0) > PERPENDICULAR_TOLERANCE_DEG:
            raise GeometryError(f"facets up {self.up} and exit {self.exit} of {crystal.name} are {angle:.3f} deg "
                                f"apart, not perpendicular (tolerance {PERPENDICULAR_TOLERANCE_DEG} deg)")
        ex = ex - (ex @ up) * up
        ex /= np.linalg.norm(ex)
        return np.array([ex, np.cross(up, ex), up])


@dataclass(frozen=True)
class GoniometerAngles:
    """Goniometer angles omega, chi, phi (deg); see the module's axis convention."""

    omega_deg: float
    chi_deg: float
    phi_deg: float

    def rotation(self) -> np.ndarray:
        """R = Rz(omega) . Rx(chi) . Rz(phi), sample frame to lab frame."""
        return _rz(self.omega_deg) @ _rx(self.chi_deg) @ _rz(self.phi_deg)

    def axes(self) -> dict[str, np.ndarray]:
        """Lab-frame unit vectors of the omega, chi and phi rotation axes at these angles."""
        z = np.array([0.0, 0.0, 1.0])
        return {"omega": z, "chi": _rz(self.omega_deg)[:, 0], "phi": _rz(self.omega_deg) @ _rx(self.chi_deg) @ z}


@dataclass(frozen=True)
class BraggCondition:
    """Where a reflection stands with respect to the Bragg condition.

    Attributes
    ----------
    scattering_vector_per_A : ndarray
        Lab-frame G (1/A, |G| = 1/d).
    k_out_per_A : ndarray
        k_in + G (1/A); on the Ewald sphere only when ``deviation_deg`` is 0.
    deviation_deg : float
        Angle of G from the Bragg cone (deg): asin(-G_x/|G|) - theta_B; positive when
        G leans further against the beam than the Bragg condition wants.
    two_theta_deg : float
        Bragg angle 2theta_B of the reflection (deg).
    """

    scattering_vector_per_A: np.ndarray
    k_out_per_A: np.ndarray
    deviation_deg: float
    two_theta_deg: float


def bragg_condition(ub: np.ndarray, hkl: tuple[int, int, int], angles: GoniometerAngles,
                    wavelength_A: float) -> BraggCondition:
    """Lab-frame scattering vector of ``hkl`` at ``angles`` and its deviation from Bragg.

    Parameters
    ----------
    ub : ndarray
        U . B (1/A), from :meth:`Mounting.u_matrix` and :func:`b_matrix`.
    hkl : tuple of int
        Miller indices.
    angles : GoniometerAngles
        omega, chi, phi (deg).
    wavelength_A : float
        X-ray wavelength (A).

    Raises
    ------
    GeometryError
        If hkl is (0 0 0) or beyond the limiting sphere (d < lambda / 2).
    """
    g = angles.rotation() @ ub @ np.asarray(hkl, dtype=float)
    g_norm = float(np.linalg.norm(g))
    if g_norm == 0:
        raise GeometryError("hkl (0 0 0) is the direct beam, not a reflection")
    sin_theta = wavelength_A * g_norm / 2
    if sin_theta > 1:
        raise GeometryError(f"reflection {hkl} (d = {1 / g_norm:.5f} A) is unreachable at lambda = {wavelength_A} A")
    k_in = np.array([1.0 / wavelength_A, 0.0, 0.0])
    return BraggCondition(g, k_in + g, float(bragg_deviations_deg(g, wavelength_A)),
                          math.degrees(2 * math.asin(sin_theta)))


def bragg_deviations_deg(g_lab: np.ndarray, wavelength_A: float) -> np.ndarray:
    """Deviations from the Bragg condition, asin(-G_x/|G|) - theta_B (deg), of many G.

    Parameters
    ----------
    g_lab : ndarray
        Lab-frame scattering vectors (1/A), shape (..., 3), none zero.
    wavelength_A : float
        X-ray wavelength (A).

    Returns
    -------
    ndarray
        Shape (...); NaN for G beyond the limiting sphere (|G| > 2/lambda).
    """
    g = np.asarray(g_lab, dtype=float)
    norm = np.linalg.norm(g, axis=-1)
    with np.errstate(invalid="ignore"):
        theta = np.arcsin(wavelength_A * norm / 2)
    return np.degrees(np.arcsin(np.clip(-g[..., 0] / norm, -1.0, 1.0)) - theta)


@dataclass(frozen=True)
class BeamPath:
    """Beam paths through the slab (um); see the module's slab model.

    Attributes
    ----------
    thickness_um : float
        Slab thickness along the exit-facet normal (um).
    incident_um : float
        Path of the incident beam through the whole slab, t/|cos a_in| (um).
    diffracted_um : float
        Longest path of the diffracted beam, t/|cos a_out| (um).
    laue : bool
        True if the diffracted beam leaves through the exit face (transmission).
    """

    thickness_um: float
    incident_um: float
    diffracted_um: float
    laue: bool

    def incident_transmission(self, attenuation_length_um: float) -> float:
        """Transmission exp(-incident_um / L) of the direct beam (0 if the path is infinite).

        Parameters
        ----------
        attenuation_length_um : float
            Attenuation length L of the sample (um).
        """
        return math.exp(-self.incident_um / attenuation_length_um)

    def diffracted_transmission(self, attenuation_length_um: float) -> float:
        """Transmission of diffracted rays averaged over the depth they come from.

        Each ray travels z/|cos a_in| in and (t - z)/|cos a_out| (Laue) or z/|cos a_out|
        (Bragg) out; the average over z in [0, t] of exp(-path / L).

        Parameters
        ----------
        attenuation_length_um : float
            Attenuation length L of the sample (um).
        """
        mu = 1.0 / attenuation_length_um
        t, a_in, a_out = self.thickness_um, self.incident_um, self.diffracted_um
        if not (math.isfinite(a_in) and math.isfinite(a_out)):
            return 0.0
        # path(z) = p0 + c z with z in [0, t]
        p0, c = (a_out, (a_in - a_out) / t) if self.laue else (0.0, (a_in + a_out) / t)
        x = mu * c * t
        factor = -math.expm1(-x) / x if abs(x) > 1e-12 else 1.0
        return math.exp(-mu * p0) * factor


@dataclass(frozen=True)
class OrientationSolution:
    """Goniometer angles for one reflection, and what they give.

    Attributes
    ----------
    reflection : TableReflection
        The reflection put in condition (its hkl as asked).
    angles : GoniometerAngles
        omega, chi, phi (deg).
    ub : ndarray
        U . B (1/A).
    condition : BraggCondition
        Scattering vector, k_out and deviation (deg) at ``angles``.
    beam_path : BeamPath
        Paths through the slab.
    """

    reflection: TableReflection
    angles: GoniometerAngles
    ub: np.ndarray
    condition: BraggCondition
    beam_path: BeamPath


def target_direction(two_theta_deg: float, scattering_plane: str) -> np.ndarray:
    """Unit lab direction G must have for the Bragg condition in the scattering plane.

    Vertical: (-sin theta, 0, cos theta); horizontal: (-sin theta, cos theta, 0).
    """
    theta = math.radians(two_theta_deg) / 2
    if scattering_plane == "vertical":
        return np.array([-math.sin(theta), 0.0, math.cos(theta)])
    return np.array([-math.sin(theta), math.cos(theta), 0.0])


def solve_angles(g_sample: np.ndarray, target: np.ndarray) -> GoniometerAngles:
    """Angles with R(omega, chi, phi) . g_sample parallel to ``target``.

    Of the one-parameter family, the one whose exit facet normal is closest to +x; if
    that does not single one out, the smallest |chi| then the smallest |phi| (see the
    module docstring).

    Parameters
    ----------
    g_sample : ndarray
        The scattering vector at zero angles (any length).
    target : ndarray
        The wanted lab direction (any length).
    """
    g = g_sample / np.linalg.norm(g_sample)
    t = target / np.linalg.norm(target)
    base = _rotation_between(g, t)
    m = base[:, 0]  # the exit normal after ``base``
    a = m[0] - t[0] * float(t @ m)
    b = float(np.cross(t, m)[0])
    if math.hypot(a, b) < _DEGENERATE_TOLERANCE:
        return _smallest_chi_angles(g, t)
    return _euler_angles(_rotation_about(t, math.atan2(b, a)) @ base)


def rocking_sensitivity(ub: np.ndarray, hkl: tuple[int, int, int], angles: GoniometerAngles) -> dict[str, float]:
    """How fast each goniometer axis rocks ``hkl`` through the Bragg condition at ``angles``.

    Turning an axis of lab direction a by d alpha turns G by a x G d alpha, so the
    deviation (asin(-G_x/|G|) - theta_B) changes by -(a x G)_x / (|G| cos(asin(-G_x/|G|)))
    per unit angle (G not along the beam). 1 or -1 at the Bragg condition: the axis is
    perpendicular to the scattering plane (the plane of the beam and G) and rocks at full
    speed; 0: the axis lies in that plane, e.g. omega (lab z) in the vertical scattering
    plane, and moves the spot sideways, off the condition only to second order.

    Parameters
    ----------
    ub : ndarray
        U . B (1/A).
    hkl : tuple of int
        Miller indices.
    angles : GoniometerAngles
        omega, chi, phi (deg).

    Returns
    -------
    dict
        d(deviation)/d(angle) (deg/deg) for ``"omega"``, ``"chi"`` and ``"phi"``.
    """
    g = angles.rotation() @ ub @ np.asarray(hkl, dtype=float)
    g /= np.linalg.norm(g)
    across = math.sqrt(max(0.0, 1.0 - g[0] ** 2))
    return {name: float(-np.cross(axis, g)[0] / across) for name, axis in angles.axes().items()}


def beam_path(rotation: np.ndarray, k_out: np.ndarray, thickness_um: float) -> BeamPath:
    """Paths of the incident and diffracted beams through the slab (um).

    Parameters
    ----------
    rotation : ndarray
        Goniometer rotation R (sample to lab).
    k_out : ndarray
        Diffracted wave vector in the lab (any length).
    thickness_um : float
        Slab thickness along the exit-facet normal (um), > 0.

    Raises
    ------
    GeometryError
        If the thickness is not positive and finite.
    """
    if not (math.isfinite(thickness_um) and thickness_um > 0):
        raise GeometryError(f"sample thickness must be > 0 um, got {thickness_um!r}")
    n = rotation @ np.array([1.0, 0.0, 0.0])
    cos_in = float(n[0])
    cos_out = float(n @ k_out / np.linalg.norm(k_out))

    def path(cos: float) -> float:
        return thickness_um / abs(cos) if abs(cos) > 1e-12 else math.inf

    return BeamPath(thickness_um, path(cos_in), path(cos_out), cos_in * cos_out > 0)


def orient(table: ReflectionTable, hkl: tuple[int, int, int], mounting: Mounting = Mounting(),
           thickness_um: float = 100.0) -> OrientationSolution:
    """Goniometer angles putting ``hkl`` in condition in the table's scattering plane.

    Parameters
    ----------
    table : ReflectionTable
        Crystal, energy and instrument (2theta range, scattering plane).
    hkl : tuple of int
        The reflection (any member of its equivalents; this very hkl is oriented).
    mounting : Mounting
        Facets along +z ("up") and +x ("beam exit") at zero angles.
    thickness_um : float
        Slab thickness along the exit-facet normal (um).

    Raises
    ------
    GeometryError
        If hkl is (0 0 0), forbidden, unreachable or outside the 2theta range, or the
        facets are not perpendicular.
    """
    reflection = table.find(hkl)
    crystal = table.structure.crystal
    ub = mounting.u_matrix(crystal) @ b_matrix(crystal)
    g_sample = ub @ np.asarray(reflection.hkl, dtype=float)
    target = target_direction(reflection.two_theta_deg, table.instrument.scattering_plane)
    angles = solve_angles(g_sample, target)
    condition = bragg_condition(ub, reflection.hkl, angles, table.wavelength_A)
    path = beam_path(angles.rotation(), condition.k_out_per_A, thickness_um)
    return OrientationSolution(reflection, angles, ub, condition, path)


def _smallest_chi_angles(g: np.ndarray, t: np.ndarray) -> GoniometerAngles:
    """Angles turning the unit vector ``g`` onto ``t`` with the smallest |chi|, then |phi|."""
    e_g = math.asin(max(-1.0, min(1.0, g[2])))
    e_t = math.asin(max(-1.0, min(1.0, t[2])))
    if abs(e_t - e_g) < _ELEVATION_TOLERANCE_RAD:
        chi = phi = 0.0
    elif math.hypot(g[0], g[1]) < _ELEVATION_TOLERANCE_RAD:  # g along the phi axis: phi is free
        chi, phi = e_t - e_g, 0.0
    else:
        alpha = math.atan2(g[1], g[0])
        # phi brings g to the +y side (then chi = e_t - e_g) or to the -y side (chi = e_g - e_t)
        phi, chi = min(((_wrap(math.pi / 2 - alpha), e_t - e_g), (_wrap(-math.pi / 2 - alpha), e_g - e_t)),
                       key=lambda candidate: abs(candidate[0]))
    w = _rx(math.degrees(chi)) @ _rz(math.degrees(phi)) @ g
    omega = _wrap(math.atan2(t[1], t[0]) - math.atan2(w[1], w[0]))
    return GoniometerAngles(math.degrees(omega), math.degrees(chi), math.degrees(phi))


def _euler_angles(rotation: np.ndarray) -> GoniometerAngles:
    """(omega, chi, phi) with Rz(omega) . Rx(chi) . Rz(phi) = ``rotation``: of the two
    branches (chi, -chi) the smaller |phi|, then omega in [0, 180); phi = 0 at chi = 0 or 180.

    chi and phi come from the third row, (sin chi sin phi, sin chi cos phi, cos chi); omega
    from rotation . (Rx(chi) . Rz(phi))^T, which is Rz(omega) however loosely phi is fixed
    near chi = 0, so the angles always reproduce ``rotation``.
    """
    sin_chi = math.hypot(rotation[2, 0], rotation[2, 1])
    if sin_chi < _GIMBAL_TOLERANCE:
        branches = [(0.0 if rotation[2, 2] > 0 else 180.0, 0.0)]
    else:
        chi = math.degrees(math.atan2(sin_chi, rotation[2, 2]))
        phi = math.degrees(math.atan2(rotation[2, 0], rotation[2, 1]))
        branches = [(chi, phi), (-chi, math.degrees(_wrap(math.radians(phi + 180.0))))]
    solutions = []
    for chi_deg, phi_deg in branches:
        rest = rotation @ (_rx(chi_deg) @ _rz(phi_deg)).T
        solutions.append(GoniometerAngles(math.degrees(_wrap(math.atan2(rest[1, 0], rest[0, 0]))), chi_deg, phi_deg))
    smallest = min(abs(s.phi_deg) for s in solutions)
    ties = [s for s in solutions if abs(s.phi_deg) - smallest < _TIE_TOLERANCE_DEG]
    return next((s for s in ties if 0.0 <= s.omega_deg < 180.0), ties[0])


def _rotation_about(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Right-handed rotation by ``angle_rad`` (rad) about the unit vector ``axis`` (Rodrigues)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1.0 - math.cos(angle_rad)) * (k @ k)


def _rotation_between(g: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A rotation taking the unit vector ``g`` onto the unit vector ``t``."""
    axis = np.cross(g, t)
    sin_angle = float(np.linalg.norm(axis))
    if sin_angle < _GIMBAL_TOLERANCE:
        if g @ t > 0:
            return np.eye(3)
        axis = np.cross(g, np.eye(3)[int(np.argmin(np.abs(g)))])  # any axis perpendicular to g
        return _rotation_about(axis / np.linalg.norm(axis), math.pi)
    return _rotation_about(axis / sin_angle, math.atan2(sin_angle, float(g @ t)))


def _rz(angle_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rx(angle_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _wrap(angle_rad: float) -> float:
    """Angle in (-pi, pi] (rad)."""
    wrapped = math.remainder(angle_rad, 2 * math.pi)
    return math.pi if wrapped == -math.pi else wrapped
