"""``xrd-bluesky strain``: lattice strain along and across a load from image files.

Every image (and the reference, e.g. the unloaded specimen) is caked with the
package's corrected integration (q, ``--sectors`` azimuthal sectors), each ring
(``--phase NAME --hkl H K L``, or ``--d-windows LO:HI`` in A) fitted in every sector,
and eps(chi) = eps_L cos^2(chi - chi_L) + eps_T sin^2(chi - chi_L) fitted to the
sectors' strains (:mod:`xrd_bluesky.science.reduction.sector_strain`, the live analysis's
science). d0 is the reference image's ring mean over azimuth (``--d0 ring-mean``, as
GSAS-II's "d-zero") or its value in each sector (``--d0 per-sector``).

The load azimuth ``--load-azimuth`` is in pyFAI's chi convention (deg; 0 along the
detector's rows, i.e. horizontal, 90 along its columns, i.e. vertical; chi and
chi + 180 are the same direction).

``--poni`` takes a pyFAI PONI or a GSAS-II ``.imctrl`` file. For the latter, the
pixel size comes from the reference image's header (MAR345) or ``--detector``, the
shape from the reference image; GSAS-II's image flip (``invert_y``/``invert_x``) is
absorbed into the geometry as the detector's orientation
(:mod:`xrd_bluesky.sources.gsas2_imctrl`): frames are integrated as the files hold
them and azimuths are those of the image as GSAS-II displays it — a load along the
vertical of GSAS-II's display is at 90 deg.

Outputs in ``-o DIR``: ``strain.csv`` (``#`` header lines: inputs, parameters,
versions; one row per image and ring) and ``d_vs_azimuth.png``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GeometryError, OutputError, UsageError
from ..frames.reader import ImageFile, read_image, require_file
from ..outputs import check_writable, verify_written
from ..science.geometry import Poni, detector_model
from ..science.reduction.integration import invalid_pixels
from ..science.reduction.peak_fitting import BACKGROUNDS, MODELS
from ..science.reduction.peak_specs import HALF_WIDTH_DEG, PeakSpec, configured_specs
from ..science.reduction.sector_strain import (
    STRAIN_PHASES,
    Cake,
    RingSectors,
    RingStrain,
    cake_integrator,
    fit_ring,
    integrate_cake,
    refine_on_rings,
    reflection_specs,
    ring_mean_d0,
    ring_strain,
)
from ..sources.file_inputs import read_geometry
from ..sources.gsas2_imctrl import header_pixel_size_m, imctrl_poni, read_imctrl
from ..store.pattern_files import software_versions, write_csv
from .options import add_detector_options, number_in, whole_number_in

#: Columns of ``strain.csv`` (strains dimensionless, d0 in A); the last two are the
#: sector fit's reduced chi-square (against the sectors' own errors) and its sectors.
COLUMNS = ("image", "ring", "d0_A", "strain_loading", "strain_loading_sigma", "strain_transverse",
           "strain_transverse_sigma", "sector_chi2r", "sectors")
D0_MODES = ("ring-mean", "per-sector")


class _HklAction(argparse.Action):
    """``--hkl H K L``: a reflection of the phase named by the last ``--phase`` before it."""

    def __call__(self, parser, namespace, values, option_string=None):
        if namespace.phase is None:
            parser.error("--hkl H K L names a reflection of a phase: give --phase NAME before it")
        namespace.reflections = [*(namespace.reflections or []), (namespace.phase, tuple(values))]


def _d_window(text: str) -> tuple[float, float]:
    """argparse type of ``--d-windows``: ``LO:HI`` in A, 0 < LO < HI."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a d-spacing window is LO:HI in A, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise argparse.ArgumentTypeError(f"d-spacing window {text!r} A is not 0 < LO < HI")
    return lo, hi


def add_parser(subparsers) -> None:
    """Add the ``strain`` subcommand."""
    p = subparsers.add_parser("strain", help="lattice strain along and across a load from images (per-sector fits)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", help="images of the loaded specimen (any format fabio reads, or HDF5)")
    p.add_argument("--poni", required=True, help="geometry: pyFAI PONI file or GSAS-II .imctrl image controls")
    p.add_argument("--reference", required=True, help="image of the unloaded specimen, whose rings give d0")
    p.add_argument("--phase", choices=sorted(STRAIN_PHASES), help="phase of the --hkl reflections that follow")
    p.add_argument("--hkl", nargs=3, type=int, action=_HklAction, dest="reflections", metavar=("H", "K", "L"),
                   help="a reflection of the preceding --phase (repeat)")
    p.add_argument("--d-windows", nargs="+", type=_d_window, default=[], metavar="LO:HI",
                   help="rings by d-spacing window (A)")
    p.add_argument("--half-width-deg", type=number_in(1e-4, 5.0, "deg"), default=HALF_WIDTH_DEG,
                   help=f"half width of a reflection's window (deg 2theta; default {HALF_WIDTH_DEG})")
    p.add_argument("--sectors", type=whole_number_in(4, 720, "sectors"), default=36,
                   help="azimuthal sectors of the cake (default 36)")
    p.add_argument("--load-azimuth", dest="load_azimuth_deg", type=number_in(-360, 360, "deg"), default=0.0,
                   help="azimuth of the load (deg, pyFAI chi: 0 horizontal, 90 vertical; default 0)")
    p.add_argument("--refine-on", dest="refine_on", choices=sorted(STRAIN_PHASES), metavar="PHASE",
                   help="first refine the geometry on the reference's rings of PHASE (an internal standard, e.g. "
                        "CeO2 dusted on the specimen: its --hkl reflections); writes DIR/refined.poni")
    p.add_argument("--d0", choices=D0_MODES, default="ring-mean",
                   help="d0 from the reference: its ring mean over azimuth (default) or its value per sector")
    p.add_argument("--model", choices=sorted(MODELS), default="gaussian", help="peak shape")
    p.add_argument("--background", choices=sorted(BACKGROUNDS), default="constant", help="background")
    p.add_argument("--polarization", type=number_in(-1.0, 1.0, ""),
                   help="pyFAI polarization factor (default: the .imctrl's PolaVal, else 0.99)")
    add_detector_options(p)
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=run, reflections=None)


# --------------------------------------------------------------------------- inputs

def _geometry(args: argparse.Namespace, reference: ImageFile) -> tuple[Poni, float]:
    """The geometry of ``--poni`` (PONI or .imctrl) and the polarization factor."""
    path = require_file(args.poni, "geometry")
    if path.suffix.lower() != ".imctrl":
        poni = read_geometry(path, detector=args.detector, shape=args.shape)
        return poni, 0.99 if args.polarization is None else args.polarization
    controls = read_imctrl(path)
    pixel = header_pixel_size_m(reference.header)
    if args.detector is not None:
        model = detector_model(args.detector)
        pixel = (model.pixel1, model.pixel2)
    if pixel is None:
        raise GeometryError(f"GSAS-II image controls {path} give the beam centre in mm, and neither the header of "
                            f"{reference.path} nor --detector gives the pixel size: give --detector MODEL")
    shape = args.shape or reference.shape
    polarization = args.polarization if args.polarization is not None else controls.polarization
    return imctrl_poni(controls, pixel, shape), 0.99 if polarization is None else polarization


def _specs(args: argparse.Namespace, wavelength_m: float) -> list[PeakSpec]:
    """The rings to fit: reflections by phase and hkl, then d-spacing windows."""
    if not args.reflections and not args.d_windows:
        raise UsageError("name the rings: --phase NAME --hkl H K L (repeat) and/or --d-windows LO:HI")
    try:
        specs = reflection_specs(args.reflections or [], wavelength_m, args.half_width_deg)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.d_windows:
        specs += configured_specs({"d_windows_A": [list(w) for w in args.d_windows]}, wavelength_m)
    return specs


def _plate_mask(image: ImageFile) -> np.ndarray | None:
    """Pixels outside the round image plate of a MAR345 scan (stored as 0), or None."""
    if "PixelLength" not in image.header or "DIM" not in image.header:
        return None
    rows, cols = image.shape
    y, x = np.ogrid[:rows, :cols]
    return (y - (rows - 1) / 2) ** 2 + (x - (cols - 1) / 2) ** 2 > (min(rows, cols) / 2) ** 2


def _mask(frame: np.ndarray, image: ImageFile, poni: Poni, source: str) -> np.ndarray:
    """Invalid pixels of ``frame`` (checked against the detector's shape): gaps,
    negative, non-finite, saturated, and outside a MAR345 plate."""
    bad = invalid_pixels(frame, poni, source=source)
    plate = _plate_mask(image)
    return bad if plate is None else bad | plate


@dataclass(frozen=True)
class ImageRings:
    """One image's cake and the fits of every ring in it."""

    name: str
    cake: Cake
    rings: list[RingSectors]


def _image_rings(image: ImageFile, role: str, poni: Poni, specs: list[PeakSpec], args: argparse.Namespace,
                 polarization: float) -> ImageRings:
    """Cake ``image`` (its frames averaged) and fit every ring."""
    path = image.path
    frame = image.mean()
    mask = _mask(frame, image, poni, f"{role} {path}")
    integrator = cake_integrator(poni, specs, args.sectors, mask=mask, polarization_factor=polarization,
                                 max_count=args.max_count)
    cake = integrate_cake(integrator, np.where(mask, 0.0, frame), f"{role} {path}")
    return ImageRings(image.frames[0][0] if len(image.frames) == 1 else image.path.stem, cake,
                      [fit_ring(cake, s, poni.wavelength, model=args.model, background=args.background)
                       for s in specs])


def _refined(image: ImageFile, poni: Poni, specs: list[PeakSpec], args: argparse.Namespace, out: Path) -> Poni:
    """The geometry refined on the reference's rings of ``--refine-on`` (written to
    ``refined.poni`` and printed).

    Raises
    ------
    UsageError
        No ``--hkl`` reflection of that phase was named.
    GeometryError
        Too few points on its rings to refine the geometry.
    """
    standard = [s for s in specs if s.label.startswith(f"{args.refine_on}_")]
    if not standard:
        raise UsageError(f"--refine-on {args.refine_on}: name its rings with --phase {args.refine_on} --hkl H K L")
    frame = image.mean()
    mask = _mask(frame, image, poni, f"reference {image.path}")
    refinement = refine_on_rings(np.where(mask, 0.0, frame), poni, standard, sectors=max(args.sectors, 36), mask=mask,
                                 model=args.model, background=args.background)
    path = refinement.poni.write(out / "refined.poni")
    print(f"geometry refined on {refinement.rings} {args.refine_on} rings ({refinement.points} points, rms "
          f"{refinement.residual_deg:.4f} deg): distance {refinement.poni.dist * 1e3:.3f} mm, written {path}")
    return refinement.poni


def _d0(reference: ImageRings, specs: list[PeakSpec], mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per ring, d0 and its 1-sigma error per sector (A).

    Raises
    ------
    UsageError
        A ring whose window holds no peak in the reference (too few sectors fitted),
        naming the window and the fits' reasons.
    """
    out = []
    for spec, ring in zip(specs, reference.rings):
        if ring.success.sum() < 2:
            raise UsageError(f"ring {spec.label} (window {spec.window_deg[0]:.4f}-{spec.window_deg[1]:.4f} deg "
                             f"2theta) holds no peak in reference {reference.name}: {ring.failures()[:300]}")
        if mode == "ring-mean":
            d0, sigma = ring_mean_d0(ring)
            out.append((np.full(ring.d_A.size, d0), np.full(ring.d_A.size, sigma)))
        else:
            out.append((ring.d_A, ring.d_sigma_A))
    return out


# --------------------------------------------------------------------------- outputs

def _plot(path: Path, results: list[ImageRings], specs: list[PeakSpec]) -> None:
    """d against azimuth, one panel per ring, one series per image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, len(specs))
    rows = math.ceil(len(specs) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for k, spec in enumerate(specs):
        ax = fig.add_subplot(rows, cols, k + 1)
        for result in results:
            ring = result.rings[k]
            ax.errorbar(ring.azimuth_deg, ring.d_A, yerr=ring.d_sigma_A, fmt="o", ms=3, label=result.name)
        ax.set(title=spec.label, xlabel="azimuth chi (deg)", ylabel="d (A)")
    fig.axes[0].legend(fontsize="small")
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    verify_written(path)


def run(args: argparse.Namespace) -> int:
    """Measure the strain of every ring in every image against the reference; write
    ``strain.csv`` and ``d_vs_azimuth.png`` into ``-o DIR`` and print a table.

    Returns
    -------
    int
        0 when every ring's strain was fitted in every image, 1 when any was not (the
        CSV holds NaN and the table the reason).

    Raises
    ------
    UsageError
        No ring named, an unknown or unreachable reflection, a ring with no peak in
        the reference.
    CorruptFrameError, ShapeMismatchError
        An unreadable reference or image, or one whose shape is not the detector's.
    GeometryError, OutputError
        An unusable geometry file, an unwritable output directory.
    """
    for path in (*args.images, args.reference):
        require_file(path, "reference" if path == args.reference else "frame")
    out = check_writable(args.output, directory=True)
    reference_image = read_image(args.reference, "reference")
    poni, polarization = _geometry(args, reference_image)
    specs = _specs(args, poni.wavelength)
    if args.refine_on:
        poni = _refined(reference_image, poni, specs, args, out)
    reference = _image_rings(reference_image, "reference", poni, specs, args, polarization)
    d0 = _d0(reference, specs, args.d0)
    results = [_image_rings(read_image(path), "frame", poni, specs, args, polarization) for path in args.images]
    rows, failed = [], 0
    print(f"{'image':24s} {'ring':16s} {'d0 (A)':>9s} {'eps_load':>10s} {'+-':>8s} {'eps_trans':>10s} {'+-':>8s} "
          f"{'chi2r':>7s}")
    for result in results:
        for spec, ring, (d0_A, d0_sigma) in zip(specs, result.rings, d0):
            strain = ring_strain(ring, result.cake, spec, poni.wavelength, args.load_azimuth_deg, d0_A, d0_sigma,
                                 common_d0=args.d0 == "ring-mean")
            rows.append(_row(result.name, strain))
            failed += not strain.directional.success
            _print_row(result.name, strain)
    write_csv(out / "strain.csv", COLUMNS, rows, _header(args, poni, polarization, specs))
    _plot(out / "d_vs_azimuth.png", [reference, *results], specs)
    print(f"written {out / 'strain.csv'}, {out / 'd_vs_azimuth.png'}")
    return 1 if failed else 0


def _row(name: str, strain: RingStrain) -> dict:
    fit = strain.directional
    return {"image": name, "ring": strain.label, "d0_A": f"{strain.d0_A:.6f}", "strain_loading": f"{fit.loading:.4e}",
            "strain_loading_sigma": f"{strain.loading_sigma:.2e}", "strain_transverse": f"{fit.transverse:.4e}",
            "strain_transverse_sigma": f"{strain.transverse_sigma:.2e}", "sector_chi2r": f"{fit.reduced_chi2:.3g}",
            "sectors": fit.sectors}


def _print_row(name: str, strain: RingStrain) -> None:
    fit = strain.directional
    status = "" if fit.success else f"  FAILED: {fit.reason}"
    print(f"{name[:24]:24s} {strain.label[:16]:16s} {strain.d0_A:9.5f} {fit.loading:10.3e} {strain.loading_sigma:8.1e} "
          f"{fit.transverse:10.3e} {strain.transverse_sigma:8.1e} {fit.reduced_chi2:7.2f}{status}")


def _header(args: argparse.Namespace, poni: Poni, polarization: float, specs: list[PeakSpec]) -> dict:
    """The ``#`` header lines of ``strain.csv``: inputs, parameters and versions."""
    return {"xrd-bluesky strain": "lattice strain along and across the load (dimensionless); d0 in A",
            "images": " ".join(str(p) for p in args.images), "reference": args.reference, "geometry": args.poni,
            "wavelength_A": f"{poni.wavelength * 1e10:.6f}", "polarization_factor": polarization,
            "rings": " ".join(f"{s.label}[{s.window_deg[0]:.4f}-{s.window_deg[1]:.4f} deg]" for s in specs),
            "sectors": args.sectors, "load_azimuth_deg (pyFAI chi)": args.load_azimuth_deg, "d0": args.d0,
            "model": args.model, "background": args.background,
            "sigma": "fit errors x sqrt(max(1, sector_chi2r)), d0 error added for ring-mean d0",
            **software_versions()}
