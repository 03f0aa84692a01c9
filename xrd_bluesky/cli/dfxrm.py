"""``xrd-bluesky dfxrm``: plan a dark-field X-ray microscopy measurement from a CIF.

Prints the reflection table at the chosen energy, the proposed (brightest reachable) or
chosen reflection and the goniometer angles that put it in condition; writes plots
(attenuation length vs energy, transmission vs thickness, a 3D sketch of the geometry)
and a one-page PDF for the logbook. The CIF is a path or a bundled name (``Si``,
``Al2O3``, ``LiNbO3``, ``KNbO3``, ``YMnO3``). What the CIF reader had to decide (the origin
choice of a CIF that leaves it open) is warned and written in the PDF.

Figures are built on :class:`matplotlib.figure.Figure` objects and rendered by Agg
(PNG) and PdfPages (PDF), so no display or pyplot state is involved.
"""

from __future__ import annotations

import argparse
import math
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from ..errors import PlausibilityWarning
from ..outputs import check_writable, verify_written
from ..paths import safe_child
from ..science.dfxrm.attenuation import (
    ENERGY_RANGE_KEV,
    attenuation_length_curve_um,
    attenuation_length_um,
    material_of,
    transmission,
)
from ..science.dfxrm.cif_structure import CrystalStructure, read_cif
from ..science.dfxrm.orientation import Facet, Mounting, OrientationSolution, orient
from ..science.dfxrm.reflection_table import (
    SCATTERING_PLANES,
    Instrument,
    ReflectionTable,
    reflection_table,
)
from .options import number_in

#: Rows of the reflection table printed in the logbook PDF.
PDF_TABLE_ROWS = 24
#: Characters per line of the structure's notices in the logbook PDF (6 pt monospace on A4).
PDF_NOTICE_COLUMNS = 140


@dataclass(frozen=True)
class DfxrmPlan:
    """Everything the command computes: table, orientation, attenuation (um)."""

    table: ReflectionTable
    mounting: Mounting
    solution: OrientationSolution
    proposed: bool
    attenuation_length_um: float

    @property
    def structure(self) -> CrystalStructure:
        """The crystal structure."""
        return self.table.structure


def add_parser(subparsers) -> None:
    """Add the ``dfxrm`` subcommand."""
    default = Instrument()
    p = subparsers.add_parser("dfxrm", help="DF-XRM planning from a CIF: reflections, attenuation, goniometer angles")
    p.add_argument("cif", help="CIF file or bundled name (Si, Al2O3, LiNbO3, KNbO3, YMnO3)")
    p.add_argument("--energy-keV", dest="energy_keV", type=number_in(*ENERGY_RANGE_KEV, "keV"), required=True,
                   help=f"photon energy (keV, {ENERGY_RANGE_KEV[0]:g}-{ENERGY_RANGE_KEV[1]:g})")
    p.add_argument("--hkl", type=int, nargs=3, metavar=("H", "K", "L"),
                   help="reflection to orient (default: the brightest reachable)")
    p.add_argument("--thickness-um", type=number_in(1e-3, 1e6, "um"), default=100.0,
                   help="slab thickness along the exit normal (um)")
    up = p.add_mutually_exclusive_group()
    up.add_argument("--up", type=int, nargs=3, metavar=("H", "K", "L"), help="plane of the facet facing up (+z)")
    up.add_argument("--up-uvw", type=int, nargs=3, metavar=("U", "V", "W"), help="direction facing up (+z)")
    ex = p.add_mutually_exclusive_group()
    ex.add_argument("--exit", type=int, nargs=3, metavar=("H", "K", "L"),
                    help="plane of the beam-exit facet (+x, downstream)")
    ex.add_argument("--exit-uvw", type=int, nargs=3, metavar=("U", "V", "W"),
                    help="direction of the beam-exit facet normal (+x)")
    p.add_argument("--two-theta-range", type=number_in(0.0, 180.0, "deg"), nargs=2, metavar=("MIN", "MAX"),
                   default=(default.two_theta_min_deg, default.two_theta_max_deg),
                   help="2theta range of the instrument (deg)")
    p.add_argument("--scattering-plane", choices=SCATTERING_PLANES, default=default.scattering_plane,
                   help="vertical (x-z, as at ESRF ID06-HXM) or horizontal (x-y)")
    p.add_argument("-o", "--output", required=True, help="folder for the plots and the PDF")
    p.set_defaults(func=run)


def plan(cif: CrystalStructure | str | Path, energy_keV: float, instrument: Instrument = Instrument(),
         hkl: tuple[int, int, int] | None = None, mounting: Mounting = Mounting(),
         thickness_um: float = 100.0) -> DfxrmPlan:
    """Table, orientation and attenuation for one crystal, energy and instrument.

    Parameters
    ----------
    cif : CrystalStructure, str or Path
        A structure read already, a CIF file or a bundled name.
    energy_keV : float
        Photon energy (keV).
    instrument : Instrument
        2theta range (deg) and scattering plane.
    hkl : tuple of int, optional
        Reflection to orient; None proposes the brightest reachable one.
    mounting : Mounting
        Facets along +z ("up") and +x ("beam exit") at zero angles.
    thickness_um : float
        Slab thickness along the exit-facet normal (um).

    Raises
    ------
    XRDBlueskyError
        ``SampleError`` for a bad CIF, ``GeometryError`` for a bad energy, reflection or
        mounting.
    """
    structure = cif if isinstance(cif, CrystalStructure) else read_cif(cif)
    table = reflection_table(structure, energy_keV, instrument)
    chosen = table.brightest().hkl if hkl is None else tuple(hkl)
    solution = orient(table, chosen, mounting, thickness_um)
    length = attenuation_length_um(material_of(table.structure), energy_keV)
    return DfxrmPlan(table, mounting, solution, hkl is None, length)


def summary_lines(result: DfxrmPlan) -> list[str]:
    """The chosen reflection, angles, beam paths and transmissions as text lines."""
    sol, table = result.solution, result.table
    r, a, path = sol.reflection, sol.angles, sol.beam_path
    length = result.attenuation_length_um
    how = "proposed (brightest reachable)" if result.proposed else "chosen"
    geometry = "Laue (transmission)" if path.laue else "Bragg (reflection)"
    if not (math.isfinite(path.incident_um) and math.isfinite(path.diffracted_um)):
        slab = [f"slab {path.thickness_um:g} um: at these angles a beam runs parallel to the slab faces "
                "(exit facet normal perpendicular to it); the slab model gives no path"]
    else:
        slab = [f"slab {path.thickness_um:g} um, {geometry}: incident path {path.incident_um:.1f} um "
                f"(transmission {path.incident_transmission(length):.4f})",
                f"diffracted path <= {path.diffracted_um:.1f} um, "
                f"depth-averaged diffracted transmission {path.diffracted_transmission(length):.4f}"]
    return [
        f"mounting at zero angles: up {result.mounting.up} along +z, exit {result.mounting.exit} along +x",
        f"{how} reflection: ({r.hkl[0]} {r.hkl[1]} {r.hkl[2]})  2theta = {r.two_theta_deg:.4f} deg  "
        f"d = {r.d_A:.5f} A  |F|^2 = {r.f_squared:.6g} e^2  I_rel = {r.relative_intensity:.1f}",
        f"goniometer ({table.instrument.scattering_plane} scattering plane): omega = {_deg(a.omega_deg)} deg  "
        f"chi = {_deg(a.chi_deg)} deg  phi = {_deg(a.phi_deg)} deg  "
        f"(deviation from Bragg {sol.condition.deviation_deg:.1e} deg)",
        f"attenuation length at {table.energy_keV:g} keV: {length:.2f} um",
        *slab,
    ]


def run(args: argparse.Namespace) -> int:
    """Print the table and the angles; write the plots and the logbook PDF (the folder
    is checked writable first, the files verified after)."""
    check_writable(args.output, directory=True)
    up = Facet(tuple(args.up_uvw), "uvw") if args.up_uvw else Facet(tuple(args.up or (0, 0, 1)), "hkl")
    exit_ = Facet(tuple(args.exit), "hkl") if args.exit else Facet(tuple(args.exit_uvw or (1, 0, 0)), "uvw")
    instrument = Instrument(*args.two_theta_range, scattering_plane=args.scattering_plane)
    result = plan(args.cif, args.energy_keV, instrument, tuple(args.hkl) if args.hkl else None,
                  Mounting(up, exit_), args.thickness_um)
    for notice in result.structure.notices:
        warnings.warn(notice, PlausibilityWarning, stacklevel=2)
    print("\n".join(result.table.lines()))
    print("\n".join(summary_lines(result)))
    for path in write_outputs(result, Path(args.output)):
        print(f"written {path}")
    return 0


def write_outputs(result: DfxrmPlan, folder: Path) -> list[Path]:
    """Write the three plots (PNG) and the one-page PDF into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    name = result.structure.name
    paths = []
    for stem, draw, projection in (("attenuation_length", plot_attenuation, None),
                                   ("transmission", plot_transmission, None),
                                   ("geometry_3d", _plot_geometry, "3d")):
        fig = Figure(figsize=(6, 4.5) if projection is None else (6, 6), layout="constrained")
        draw(fig.add_subplot(projection=projection), result)
        paths.append(safe_child(folder, f"{name}_{stem}.png"))
        fig.savefig(paths[-1], dpi=120)
    paths.append(safe_child(folder, f"{name}_dfxrm.pdf"))
    with PdfPages(paths[-1]) as pdf:
        pdf.savefig(logbook_page(result))
    return [verify_written(path) for path in paths]


def logbook_page(result: DfxrmPlan) -> Figure:
    """One A4 page: table, angles and the three plots."""
    fig = Figure(figsize=(8.27, 11.69))
    rows = result.table.lines()
    more = len(rows) - 2 - PDF_TABLE_ROWS
    text = rows[:2 + PDF_TABLE_ROWS] + ([f"... {more} more reflections (see the printed table)"] if more > 0 else [])
    text += [""] + summary_lines(result)
    for notice in result.structure.notices:
        text += [""] + textwrap.wrap(f"warning: {notice}", PDF_NOTICE_COLUMNS, subsequent_indent="  ")
    fig.text(0.04, 0.985, f"DF-XRM plan: {result.structure.name} ({result.structure.source})",
             fontsize=10, weight="bold", va="top")
    fig.text(0.04, 0.965, "\n".join(text), family="monospace", fontsize=6, va="top")
    plot_attenuation(fig.add_axes((0.09, 0.40, 0.37, 0.18)), result)
    plot_transmission(fig.add_axes((0.59, 0.40, 0.37, 0.18)), result)
    _plot_geometry(fig.add_axes((0.15, 0.03, 0.7, 0.31), projection="3d"), result)
    return fig


def plot_attenuation(ax, result: DfxrmPlan) -> None:
    """Draw the crystal's attenuation length (um) against energy (keV) on ``ax``."""
    energies = np.geomspace(*ENERGY_RANGE_KEV, 400)
    ax.semilogy(energies, attenuation_length_curve_um(material_of(result.structure), energies))
    ax.axvline(result.table.energy_keV, color="C3", ls="--", lw=0.8,
               label=f"{result.table.energy_keV:g} keV: {result.attenuation_length_um:.1f} um")
    ax.set_xlabel("photon energy (keV)")
    ax.set_ylabel("attenuation length (um)")
    ax.set_title(f"{result.structure.formula}, {result.structure.density_g_cm3:.3f} g/cm^3", fontsize=9)
    ax.legend(fontsize=7)


def plot_transmission(ax, result: DfxrmPlan) -> None:
    """Draw the transmission against the beam path (um) through the crystal on ``ax``."""
    path = result.solution.beam_path
    t_max = max(5 * result.attenuation_length_um, 2 * path.thickness_um)
    thickness = np.linspace(0.0, t_max, 300)
    ax.plot(thickness, transmission(material_of(result.structure), thickness, result.table.energy_keV))
    ax.axvline(path.thickness_um, color="C3", ls="--", lw=0.8, label=f"slab {path.thickness_um:g} um")
    ax.set_xlabel("path length in the sample (um)")
    ax.set_ylabel("transmission")
    ax.set_title(f"transmission at {result.table.energy_keV:g} keV", fontsize=9)
    ax.legend(fontsize=7)


def _plot_geometry(ax, result: DfxrmPlan) -> None:
    """Beam, diffracted beam, the slab (box), crystal axes a*, b*, c* and goniometer axes."""
    sol = result.solution
    rot = sol.angles.rotation()
    t = sol.beam_path.thickness_um
    size = 2.0 * t  # lateral size of the sketched slab (um)
    half = np.array([t, size, size]) / 2
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half @ rot.T
    for i in range(8):
        for j in range(i + 1, 8):
            if bin(i ^ j).count("1") == 1:  # corners differing in one coordinate share an edge
                ax.plot(*corners[[i, j]].T, color="0.4", lw=0.8)
    for axis, label, colour in ((0, "exit facet", "C1"), (2, "up facet", "C2")):
        centre = rot[:, axis] * half[axis]
        ax.quiver(*centre, *(rot[:, axis] * 0.6 * size), color=colour, lw=1.2)
        ax.text(*(centre + rot[:, axis] * 0.7 * size), label, color=colour, fontsize=7)
    reach = 1.2 * size  # length of the beam arrows (um)
    ax.quiver(-reach, 0, 0, reach, 0, 0, color="C3", lw=1.5, arrow_length_ratio=0.1)
    ax.text(-reach, 0, 0.1 * reach, "beam", color="C3", fontsize=7)
    k_out = sol.condition.k_out_per_A / np.linalg.norm(sol.condition.k_out_per_A)
    ax.quiver(0, 0, 0, *(k_out * reach), color="C4", lw=1.5, arrow_length_ratio=0.1)
    r = sol.reflection.hkl
    ax.text(*(k_out * 1.05 * reach), f"diffracted ({r[0]} {r[1]} {r[2]})", color="C4", fontsize=7)
    crystal_axes = rot @ sol.ub  # columns: a*, b*, c* in the lab (1/A)
    for i, label in enumerate(("a*", "b*", "c*")):
        direction = crystal_axes[:, i] * 0.8 * reach / np.linalg.norm(crystal_axes[:, i])
        ax.quiver(0, 0, 0, *direction, color="C0", lw=1.0, arrow_length_ratio=0.12)
        ax.text(*(1.08 * direction), label, color="C0", fontsize=8)
    a = sol.angles
    for label, axis in a.axes().items():
        ax.plot(*np.array([-axis, axis]).T * reach, color="k", ls=":", lw=0.8)
        ax.text(*(axis * 1.02 * reach), f"{label} axis", fontsize=7)
    lim = 1.1 * reach
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim))
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlabel("x, beam (um)", fontsize=7)
    ax.set_ylabel("y (um)", fontsize=7)
    ax.set_zlabel("z, up (um)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_title(f"omega {_deg(a.omega_deg)}, chi {_deg(a.chi_deg)}, phi {_deg(a.phi_deg)} deg", fontsize=8)


def _deg(value: float) -> str:
    """An angle (deg) to 4 decimals, without a spurious minus sign on zero."""
    return f"{value:.4f}" if abs(value) >= 5e-5 else "0.0000"
