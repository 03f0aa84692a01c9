"""Logic of the DF-XRM planner page, free of Streamlit (so that it is tested directly).

The plan itself is :func:`xrd_bluesky.cli.dfxrm.plan` and its text, plots and logbook
page are the command's; this module adds what a page needs around them: an uploaded CIF
checked and parsed in memory, energy <-> wavelength, facets from text, the
tables as DataFrames, the objective lens (a compound refractive lens), the interactive 3D
scene (plotly, orthographic), the PDF as bytes and the Bluesky command of the solution.

Scene. Lab frame of :mod:`xrd_bluesky.science.dfxrm.orientation` (x along the beam, z
up), lengths in um, origin at the centre of the sample. The sample box (thickness along
the exit-facet normal, width, height along the up-facet normal) is to scale; the unit
cell, in the mounted orientation at the solved angles, is magnified to fit inside it;
beams, objective lens and goniometer stages are drawn to the box's size (the lens sits
metres away, at its focal length, in reality).
"""

from __future__ import annotations

import dataclasses
import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

# the command's plotters and logbook page are private there (to be made public)
from ..cli.dfxrm import (
    DfxrmPlan,
    logbook_page,
    plan,
    plot_attenuation,
    plot_transmission,
)
from ..errors import PlausibilityWarning, ResourceLimitError, SampleError, UsageError
from ..science.dfxrm.cif_structure import CrystalStructure, read_cif_text
from ..science.dfxrm.compound_refractive_lens import LENS_MATERIALS, focal_length_m
from ..science.dfxrm.orientation import GoniometerAngles, Mounting, rocking_sensitivity
from ..science.dfxrm.reflection_table import (
    HKL,
    Instrument,
    ReflectionTable,
    TableReflection,
    laue_rotations,
)

#: Largest CIF accepted from an upload (bytes).
MAX_CIF_BYTES = 2 * 1024 * 1024
#: Size of the unit cell drawn in the sample: its circumscribed sphere's radius as a
#: fraction of the box's smallest half-dimension (so that the cell lies inside the box).
CELL_FILL = 0.8
#: Distance of the objective lens's centre from the sample (in bounding radii of the box).
LENS_DISTANCE = 2.4
#: Colours of the atoms of the scene, by order of the elements in the formula.
ATOM_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")

# warnings.catch_warnings changes process-wide state: one plan at a time records them
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class PlannerResult:
    """A plan and what the page must tell about its inputs.

    Attributes
    ----------
    plan : DfxrmPlan
        Table, orientation and attenuation of :func:`xrd_bluesky.cli.dfxrm.plan`.
    notices : tuple of str
        The structure's notices (``CrystalStructure.notices``) and the plausibility
        warnings raised while reading the CIF.
    """

    plan: DfxrmPlan
    notices: tuple[str, ...]


@dataclass(frozen=True)
class Objective:
    """The objective lens: a compound refractive lens (CRL) on the diffracted beam.

    Attributes
    ----------
    material : str
        Label of :data:`~xrd_bluesky.science.dfxrm.compound_refractive_lens.LENS_MATERIALS`.
    radius_um : float
        Apex radius of curvature R of each lens (um).
    n_lenses : int
        Number of lenses N.
    focal_length_m : float
        Thin-lens focal length R / (2 N delta) (m) at the plan's energy.
    """

    material: str
    radius_um: float
    n_lenses: int
    focal_length_m: float


def read_uploaded_cif(name: str, data: bytes) -> CrystalStructure:
    """An uploaded CIF, checked for size and parsed in memory (nothing is written).

    Parameters
    ----------
    name : str
        The file name the browser sent (it names the structure's source).
    data : bytes
        The file's content.

    Raises
    ------
    ResourceLimitError
        If the file is larger than :data:`MAX_CIF_BYTES`.
    SampleError, ImplausibleInputError
        If it is not UTF-8 text or not a usable CIF (as :func:`read_cif_text`).
    """
    if len(data) > MAX_CIF_BYTES:
        raise ResourceLimitError(f"uploaded CIF {name!r} is {len(data) / 2**20:.1f} MB, more than the "
                                 f"{MAX_CIF_BYTES / 2**20:g} MB a CIF may have here")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SampleError(f"cannot read CIF {name}: it is not UTF-8 text") from None
    structure, said = _with_warnings(read_cif_text, text, Path(name).name)
    return dataclasses.replace(structure, notices=tuple(dict.fromkeys((*structure.notices, *said))))


def parse_indices(text: str, what: str) -> tuple[int, int, int]:
    """Three whole numbers from text such as ``"0 0 1"``, ``"(1 1 0)"`` or ``"[1, -1, 0]"``.

    Raises
    ------
    UsageError
        If the text is not three whole numbers; the message names ``what``.
    """
    parts = text.replace(",", " ").strip().strip("()[]").split()
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UsageError(f"{what} {text!r} is not three whole numbers, e.g. '0 0 1'")
    return values


def make_plan(crystal: CrystalStructure | str, energy_keV: float, instrument: Instrument, hkl: HKL | None,
              mounting: Mounting, thickness_um: float) -> PlannerResult:
    """The command's plan for these inputs, with the structure's notices and warnings.

    Parameters
    ----------
    crystal : CrystalStructure or str
        A structure (an upload, read by :func:`read_uploaded_cif`) or a bundled CIF's name.
    energy_keV : float
        Photon energy (keV).
    instrument : Instrument
        2theta range (deg) and scattering plane.
    hkl : tuple of int, optional
        The reflection; None proposes the brightest reachable one.
    mounting : Mounting
        The up and exit facets.
    thickness_um : float
        Sample thickness along the exit-facet normal (um).

    Raises
    ------
    XRDBlueskyError
        As :func:`xrd_bluesky.cli.dfxrm.plan`.
    """
    result, said = _with_warnings(plan, crystal, energy_keV, instrument, hkl, mounting, thickness_um)
    return PlannerResult(result, tuple(dict.fromkeys((*result.structure.notices, *said))))


def _with_warnings(function, *args):
    """``function(*args)`` and the messages of the PlausibilityWarnings it issued (one
    session at a time: the warnings filter is process-wide)."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PlausibilityWarning)
        result = function(*args)
    return result, [str(w.message) for w in caught if issubclass(w.category, PlausibilityWarning)]


def hkl_text(hkl: HKL) -> str:
    """``(h k l)``."""
    return "(" + " ".join(str(v) for v in hkl) + ")"


def reflection_label(reflection: TableReflection) -> str:
    """One line naming a reflection of the table: hkl, 2theta (deg), relative intensity."""
    return (f"{hkl_text(reflection.hkl)}  2theta {reflection.two_theta_deg:.3f} deg  "
            f"I_rel {reflection.relative_intensity:.1f}")


def reflection_dataframe(table: ReflectionTable) -> pd.DataFrame:
    """The reflection table: hkl, multiplicity, d (A), 2theta (deg), |F|^2 (e^2), I_rel."""
    rows = table.reflections
    return pd.DataFrame({
        "hkl": [hkl_text(r.hkl) for r in rows],
        "multiplicity": [r.multiplicity for r in rows],
        "d (A)": [r.d_A for r in rows],
        "2theta (deg)": [r.two_theta_deg for r in rows],
        "|F|^2 (e^2)": [r.f_squared for r in rows],
        "I_rel (max 100)": [r.relative_intensity for r in rows],
    })


def laue_equivalents(table: ReflectionTable, hkl: HKL) -> list[HKL]:
    """``hkl`` and its Laue-group equivalents (other orientations of the same reflection):
    ``hkl`` first, then those with fewer negative indices, largest first."""
    images = np.asarray(hkl) @ laue_rotations(table.structure.space_group)
    others = {tuple(int(v) for v in row) for row in images} - {tuple(hkl)}
    return [tuple(hkl)] + sorted(others, key=lambda h: (sum(v < 0 for v in h), [-v for v in h]))


def angles_dataframe(result: DfxrmPlan) -> pd.DataFrame:
    """Goniometer angles (deg) and how fast each axis rocks the reflection (deg/deg), to 4 decimals."""
    sol = result.solution
    angles = {"omega": sol.angles.omega_deg, "chi": sol.angles.chi_deg, "phi": sol.angles.phi_deg}
    sensitivity = rocking_sensitivity(sol.ub, sol.reflection.hkl, sol.angles)
    return pd.DataFrame({"axis": list(angles), "angle (deg)": [float(angle_text(v)) for v in angles.values()],
                         "rocking sensitivity (deg/deg)": [round(sensitivity[axis], 4) + 0.0 for axis in angles]})


def angle_text(angle_deg: float) -> str:
    """An angle (deg) to 4 decimals, zero without a minus sign."""
    return f"{round(angle_deg, 4) + 0.0:.4f}"


def objective(material: str, radius_um: float, n_lenses: int, energy_keV: float) -> Objective:
    """The CRL objective of ``n_lenses`` lenses of ``material`` (a label of
    :data:`~xrd_bluesky.science.dfxrm.compound_refractive_lens.LENS_MATERIALS`) at ``energy_keV``."""
    formula, density = LENS_MATERIALS[material]
    return Objective(material, radius_um, n_lenses, focal_length_m(radius_um, n_lenses, formula, energy_keV, density))


def attenuation_figure(result: DfxrmPlan) -> Figure:
    """Attenuation length (um) against photon energy (keV), as in the command."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    plot_attenuation(fig.add_subplot(), result)
    return fig


def transmission_figure(result: DfxrmPlan) -> Figure:
    """Transmission against path length in the sample (um), as in the command."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    plot_transmission(fig.add_subplot(), result)
    return fig


def logbook_pdf(result: DfxrmPlan) -> bytes:
    """The command's one-page logbook PDF, in memory."""
    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        pdf.savefig(logbook_page(result))
    return buffer.getvalue()


def bluesky_command(result: DfxrmPlan, crystal: str) -> str:
    """The lines that run :func:`xrd_bluesky.plans.dfxrm_align` for this solution.

    Parameters
    ----------
    result : DfxrmPlan
        The plan.
    crystal : str
        The ``crystal`` argument: a bundled name or the CIF's file name.
    """
    up, exit_ = result.mounting.up, result.mounting.exit
    inst = result.table.instrument
    return "\n".join([
        "from xrd_bluesky.plans import dfxrm_align",
        "from xrd_bluesky.science.dfxrm.orientation import Facet",
        "from xrd_bluesky.science.dfxrm.reflection_table import Instrument",
        "",
        f"RE(dfxrm_align(gonio, {crystal!r}, {result.solution.reflection.hkl!r}, "
        f"energy_keV={result.table.energy_keV!r},",
        f"               up=Facet({up.indices!r}, {up.kind!r}), exit=Facet({exit_.indices!r}, {exit_.kind!r}),",
        f"               instrument=Instrument({inst.two_theta_min_deg!r}, {inst.two_theta_max_deg!r}, "
        f"scattering_plane={inst.scattering_plane!r}),",
        "               detectors=[det]))",
    ])


def scene_figure(result: DfxrmPlan, width_um: float, height_um: float, lens: Objective) -> go.Figure:
    """The interactive 3D view (orthographic): sample box with its dimensions, the unit
    cell and its atoms in the mounted orientation, the beams, the objective lens and the
    goniometer stages at their angles (see the module's description).

    Parameters
    ----------
    result : DfxrmPlan
        The plan (angles, UB, beams; the box's thickness is the plan's).
    width_um, height_um : float
        Sample width (along the sample's y) and height (along the up-facet normal) (um).
    lens : Objective
        The objective lens.
    """
    sol = result.solution
    rot = sol.angles.rotation()
    half_um = np.array([sol.beam_path.thickness_um, width_um, height_um]) / 2
    radius_um = float(np.linalg.norm(half_um))  # bounding radius of the box
    traces = [*_box_traces(rot, half_um, result.mounting), *_cell_traces(result, rot, CELL_FILL * half_um.min()),
              *_beam_traces(result, radius_um), *_lens_traces(sol.condition.k_out_per_A, radius_um, lens),
              *_stage_traces(result, rot, radius_um)]
    fig = go.Figure(traces)
    fig.update_layout(
        title=dict(text=f"{result.structure.name} {hkl_text(sol.reflection.hkl)}: sample to scale (um), unit cell "
                        "magnified, beams, lens and stages schematic", font=dict(size=13)),
        scene=dict(xaxis_title="x, beam (um)", yaxis_title="y (um)", zaxis_title="z, up (um)", aspectmode="data",
                   camera=dict(projection=dict(type="orthographic"), up=dict(x=0, y=0, z=1),
                               eye=dict(x=-1.2, y=-1.8, z=0.9))),
        legend=dict(itemsizing="constant", font=dict(size=11)),
        margin=dict(l=0, r=0, t=40, b=0), height=640, uirevision="dfxrm-scene")
    return fig


def _polyline(segments: list[np.ndarray]) -> dict[str, list]:
    """x, y, z of line segments (each (n, 3)) joined with gaps (None) for one trace."""
    coords: list[list] = [[], [], []]
    for segment in segments:
        for axis in range(3):
            coords[axis] += [*segment[:, axis].tolist(), None]
    return dict(x=coords[0], y=coords[1], z=coords[2])


def _text(points: np.ndarray, labels: list[str], name: str, colour: str, group: str) -> go.Scatter3d:
    """Labels at points (n, 3), in the legend group of what they label."""
    return go.Scatter3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="text", text=labels, name=name,
                        textfont=dict(color=colour, size=12), legendgroup=group, showlegend=False, hoverinfo="skip")


def _box_traces(rot: np.ndarray, half_um: np.ndarray, mounting: Mounting) -> list:
    """Sample box (surface and edges), its dimensions and the two facet normals."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    corners = signs * half_um @ rot.T
    faces = np.array([(0, 1, 3), (0, 3, 2), (4, 5, 7), (4, 7, 6), (0, 1, 5), (0, 5, 4),
                      (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 3, 7), (1, 7, 5)])
    edges = [corners[[i, j]] for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1]
    t, w, h = 2 * half_um
    at = np.array([[0.0, -1.0, -1.0], [-1.0, 0.0, -1.0], [-1.0, -1.0, 0.0]]) * half_um @ rot.T * 1.08
    normals = {"exit": (0, mounting.exit), "up": (2, mounting.up)}
    arrows = [np.array([rot[:, axis] * half_um[axis], rot[:, axis] * (half_um[axis] + 0.6 * half_um.max())])
              for axis, _ in normals.values()]
    return [
        go.Mesh3d(x=corners[:, 0], y=corners[:, 1], z=corners[:, 2], i=faces[:, 0], j=faces[:, 1], k=faces[:, 2],
                  color="lightsteelblue", opacity=0.25, name="sample box", legendgroup="box", showlegend=True,
                  hovertext=f"sample: thickness {t:g} um, width {w / 1e3:g} mm, height {h / 1e3:g} mm",
                  hoverinfo="text"),
        go.Scatter3d(**_polyline(edges), mode="lines", line=dict(color="slategray", width=3), name="sample edges",
                     legendgroup="box", showlegend=False, hoverinfo="skip"),
        _text(at, [f"thickness {t:g} um", f"width {w / 1e3:g} mm", f"height {h / 1e3:g} mm"], "sample dimensions",
              "slategray", "box"),
        go.Scatter3d(**_polyline(arrows), mode="lines", line=dict(color="darkorange", width=5), name="facet normals",
                     hoverinfo="skip"),
        _text(np.array([arrow[1] for arrow in arrows]) * 1.1,
              [f"{which} {facet}" for which, (_, facet) in normals.items()], "facet labels", "darkorange",
              "facet normals"),
    ]


def _cell_traces(result: DfxrmPlan, rot: np.ndarray, radius_um: float) -> list:
    """Unit cell edges and its atoms (with their images on the cell's faces), in the lab
    at the solved angles, centred on the origin and scaled to ``radius_um``."""
    direct = rot @ np.linalg.inv(result.solution.ub).T  # columns: a, b, c in the lab (A)
    unit = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
    centred = (unit - 0.5) @ direct.T
    um_per_A = radius_um / np.linalg.norm(centred, axis=1).max()
    corners = centred * um_per_A
    edges = [corners[[i, j]] for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1]
    magnification = um_per_A * 1e4  # 1 A = 1e-4 um
    traces = [go.Scatter3d(**_polyline(edges), mode="lines", line=dict(color="black", width=2),
                           name=f"unit cell (x{magnification:.3g})", legendgroup="cell", hoverinfo="skip"),
              _text(np.array([corners[0] + (corners[index] - corners[0]) * 1.12 for index in (4, 2, 1)]),
                    ["a", "b", "c"], "cell axes", "black", "cell")]
    elements = list(dict.fromkeys(atom.element for atom in result.structure.crystal.atoms))
    for number, element in enumerate(elements):
        images = [(np.array(atom.position) + shift, atom.occupancy)
                  for atom in result.structure.crystal.atoms if atom.element == element for shift in unit]
        inside = [(f, occupancy) for f, occupancy in images if np.all(f <= 1.0 + 1e-6)]
        where = (np.array([f for f, _ in inside]) - 0.5) @ direct.T * um_per_A
        traces.append(go.Scatter3d(x=where[:, 0], y=where[:, 1], z=where[:, 2], mode="markers", name=f"atoms {element}",
                                   marker=dict(size=4, color=ATOM_COLOURS[number % len(ATOM_COLOURS)],
                                               line=dict(color="black", width=1)),
                                   hovertext=[f"{element}, occupancy {occupancy:g}" for _, occupancy in inside],
                                   hoverinfo="text"))
    return traces


def _beam_traces(result: DfxrmPlan, radius_um: float) -> list:
    """Incident, transmitted and diffracted beams through the origin."""
    k_out = result.solution.condition.k_out_per_A
    k_out = k_out / np.linalg.norm(k_out)
    reach = (LENS_DISTANCE + 1.2) * radius_um
    reflection = result.solution.reflection
    beams = (("incident beam", np.array([[-reach, 0, 0], [0, 0, 0]]), "crimson", "solid", ["beam", ""]),
             ("direct beam (transmitted)", np.array([[0, 0, 0], [reach, 0, 0]]), "crimson", "dot", ["", ""]),
             (f"diffracted beam {hkl_text(reflection.hkl)}, 2theta {reflection.two_theta_deg:.3f} deg",
              np.array([[0, 0, 0], k_out * reach]), "purple", "solid", ["", hkl_text(reflection.hkl)]))
    return [go.Scatter3d(x=line[:, 0], y=line[:, 1], z=line[:, 2], mode="lines+text", name=name,
                         line=dict(color=colour, width=6, dash=dash), text=labels, textposition="top center",
                         textfont=dict(color=colour, size=12), hoverinfo="name")
            for name, line, colour, dash, labels in beams]


def _lens_traces(k_out: np.ndarray, radius_um: float, lens: Objective) -> list:
    """The CRL as a cylinder on the diffracted beam, named with N, material, R and f."""
    axis = k_out / np.linalg.norm(k_out)
    across = np.cross(axis, [0.0, 1.0, 0.0] if abs(axis[1]) < 0.9 else [1.0, 0.0, 0.0])
    across /= np.linalg.norm(across)
    other = np.cross(axis, across)
    angles = np.linspace(0, 2 * np.pi, 25)[:-1]
    ring = np.cos(angles)[:, None] * across + np.sin(angles)[:, None] * other
    centre, half_length, lens_radius = LENS_DISTANCE * radius_um * axis, 0.3 * radius_um, 0.25 * radius_um
    points = np.vstack([centre + end * half_length * axis + lens_radius * ring for end in (-1, 1)])
    n = len(angles)
    side = [(a, (a + 1) % n, n + a) for a in range(n)] + [((a + 1) % n, n + (a + 1) % n, n + a) for a in range(n)]
    i, j, k = np.array(side).T
    name = (f"objective lens (CRL): {lens.n_lenses} x {lens.material}, R {lens.radius_um:g} um, "
            f"f = {lens.focal_length_m:.4g} m")
    return [go.Mesh3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], i=i, j=j, k=k, color="teal", opacity=0.5,
                      name=name, legendgroup="lens", showlegend=True, hovertext=name, hoverinfo="text"),
            _text((centre + 1.6 * lens_radius * other)[None, :], ["CRL"], "objective lens label", "teal", "lens")]


def _stage_traces(result: DfxrmPlan, rot: np.ndarray, radius_um: float) -> list:
    """The omega, chi and phi stages as rings about their axes at the solved angles, each
    with a pointer from its zero (thin) to its angle (thick); the angle is in the name."""
    a = result.solution.angles
    axes = a.axes()
    z = np.array([0.0, 0.0, 1.0])
    carried_x = GoniometerAngles(a.omega_deg, a.chi_deg, 0.0).rotation()[:, 0]  # phi's zero: x turned by omega, chi
    stages = (("omega", a.omega_deg, -1.6 * radius_um * z, 1.3, np.array([1.0, 0.0, 0.0]), axes["chi"], "#1f77b4"),
              ("chi", a.chi_deg, np.zeros(3), 1.3, z, axes["phi"], "#2ca02c"),
              ("phi", a.phi_deg, -1.15 * radius_um * axes["phi"], 0.9, carried_x, rot[:, 0], "#ff7f0e"))
    traces = []
    for name, angle, centre, size, zero, pointer, colour in stages:
        ring_radius = size * radius_um
        other = np.cross(axes[name], zero)
        turns = np.linspace(0, 2 * np.pi, 73)
        ring = centre + ring_radius * (np.cos(turns)[:, None] * zero + np.sin(turns)[:, None] * other)
        tip = centre + ring_radius * pointer
        traces += [
            go.Scatter3d(**_polyline([ring, np.array([centre, centre + ring_radius * zero])]), mode="lines",
                         line=dict(color=colour, width=2), name=f"{name} stage: {angle_text(angle)} deg",
                         legendgroup=name, hoverinfo="name"),
            go.Scatter3d(x=[centre[0], tip[0]], y=[centre[1], tip[1]], z=[centre[2], tip[2]], mode="lines+text",
                         line=dict(color=colour, width=7), text=["", name], textfont=dict(color=colour, size=12),
                         name=f"{name} angle", legendgroup=name, showlegend=False, hoverinfo="skip"),
        ]
    return traces
