"""``xrd-bluesky integrate``: azimuthal integration of image files to ``.xye`` and ``.chi``.

For each frame of each input file (TIFF/EDF/CBF through fabio; HDF5/NeXus at
``/entry/data/data``) the command writes two text patterns into the output directory:

``<name>.xye``
    Three columns, radial position, intensity, 1-sigma error, after ``#`` comment lines
    that name the radial unit, the PONI, dark, gain and mask files, the polarization
    factor and the versions of xrd-bluesky and pyFAI.
``<name>.chi``
    The classic Fit2D "chi" file: title line, radial-axis label line (Fit2D's own
    labels, e.g. ``2-Theta Angle (Degrees)``, ``Q (Inverse Nanometres)``), intensity
    label line, number-of-points line, then ``radial intensity`` rows, as Fit2D and
    GSAS-II's "Fit2D chi" exporter write it.

With ``--stitch``, the frames of a detector on a 2theta arm (``--goniometer`` model,
``--positions`` CSV and its ``--arm`` angle column) are integrated into one pattern,
``stitched.xye`` and ``stitched.chi``, as pyFAI's ``MultiGeometry`` does
(:mod:`~xrd_bluesky.science.multi_geometry`): every frame into the same bins, on the
geometry of its arm angle, in counts per steradian; the sums are added, then divided.

Bins without any valid pixel (NaN intensity) are left out of both files: Rietveld
programs do not accept NaN. The ``.xye`` header says how many bins were left out.

Compatibility with GSAS-II's ``.xye``/``.chi`` importer (``G2pwd_xye``), which guesses
the x axis from the header:

* in an ``.xye`` file, the first ``#`` line that contains a lowercase ``q`` makes GSAS-II
  read the x column as q and take the line's second word as the wavelength. 2-theta files
  therefore have no lowercase ``q`` in their own header text (a file path that contains
  one would still mislead GSAS-II), and q files start with the line
  ``# <wavelength> wavelength in nm`` (``A`` for ``q_A^-1``), in the length unit inverse to
  the q unit, so that GSAS-II's ``2theta = 2 asin(wavelength q / 4 pi)`` is right;
* GSAS-II imports only 2-theta ``.chi`` files (a q ``.chi`` needs a wavelength that the
  Fit2D format has no place for); use ``--unit 2th_deg`` or the ``.xye`` file for it.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import numpy as np

from .command_options import add_detector_options, whole_number_in
from .errors import PlausibilityWarning, UsageError
from .outputs import check_writable
from .science.input_checks import check_saturation
from .science.integration import MAX_RADIAL_BINS, UNITS, IntegrationResult, integrate_1d
from .sources.file_inputs import read_corrections, read_geometry
from .sources.image_files import HDF5_DATASET, HDF5_SUFFIXES, read_image, require_file
from .sources.positions_csv import FILE_COLUMN, frame_positions

#: Fit2D's radial-axis labels of a .chi file, per pyFAI unit name. Fit2D writes
#: "Q (Inverse Nanometres)" for its q scans; it has no 1/A scan, the label follows suit.
CHI_LABELS = {
    "2th_deg": "2-Theta Angle (Degrees)",
    "q_nm^-1": "Q (Inverse Nanometres)",
    "q_A^-1": "Q (Inverse Angstroms)",
}

#: Wavelength unit inverse to each q unit, with its factor from metres (GSAS-II line).
_WAVELENGTH_UNIT = {"q_nm^-1": ("nm", 1e9), "q_A^-1": ("A", 1e10)}

#: Default polarization factor: horizontally polarised synchrotron beam.
DEFAULT_POLARIZATION = 0.99

#: Intensity line of the ``.xye`` header: per-file patterns (:func:`integrate_1d`) and
#: stitched ones (:class:`~xrd_bluesky.science.corrected_integration.CorrectedIntegrator`).
PIXEL_INTENSITY = "counts per pixel (pyFAI solid-angle normalisation)"
STERADIAN_INTENSITY = "counts per steradian (absolute solid angle)"

#: Name of the stitched pattern's files in the output directory.
STITCHED = "stitched"


# --------------------------------------------------------------------------- writing

def _finite_rows(result: IntegrationResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Radial, intensity and sigma of the bins with a finite intensity and sigma, and
    the number of bins left out."""
    radial = np.asarray(result.radial, dtype=float)
    intensity = np.asarray(result.intensity, dtype=float)
    sigma = np.asarray(result.sigma, dtype=float)
    keep = np.isfinite(radial) & np.isfinite(intensity) & np.isfinite(sigma)
    return radial[keep], intensity[keep], sigma[keep], int(keep.size - keep.sum())


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so that a reader never
    sees half a pattern."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _one_line(value) -> str:
    """``value`` as text on one line (``none`` for None): line breaks become spaces."""
    return "none" if value is None else str(value).replace("\r", " ").replace("\n", " ")


def write_xye(path: str | Path, result: IntegrationResult, header: dict, *,
              wavelength_m: float | None = None, intensity_label: str = PIXEL_INTENSITY) -> int:
    """Write a pattern as a three-column ``.xye`` file (radial, intensity, sigma).

    Parameters
    ----------
    path : str or Path
        Output file.
    result : IntegrationResult
        Pattern from :func:`~xrd_bluesky.science.integration.integrate_1d`.
    header : dict
        Written as ``# key: value`` comment lines (newlines in values become spaces).
    wavelength_m : float, optional
        Wavelength (m). For q patterns it is written first, in the length unit inverse
        to the q unit, as ``# <value> wavelength in nm`` (or ``A``): GSAS-II reads it to
        convert q to 2-theta.
    intensity_label : str
        What the intensity is (its unit and normalisation), for the header.

    Returns
    -------
    int
        Number of data rows written. Bins with a NaN intensity or sigma (no valid
        pixel) are left out, as the header says.
    """
    radial, intensity, sigma, omitted = _finite_rows(result)
    lines = []
    if wavelength_m is not None and result.unit in _WAVELENGTH_UNIT:
        name, factor = _WAVELENGTH_UNIT[result.unit]
        lines.append(f"# {wavelength_m * factor:.8g} wavelength in {name} (for GSAS-II: x is q in 1/{name})")
    lines += [
        "# xrd-bluesky azimuthal integration; columns: radial, intensity, sigma",
        f"# radial: {result.unit} ({result.radial_units})",
        f"# intensity: {intensity_label}, sigma: 1 s.d. (Poisson model)",
        f"# omitted: {omitted} of {np.size(result.radial)} bins had no valid pixel (NaN) and are left out; "
        "Rietveld programs reject NaN",
    ]
    lines += [f"# {_one_line(key)}: {_one_line(value)}" for key, value in header.items()]
    lines.append(f"# {result.unit}  I  sigma")
    rows = [f"{x:.7e}  {y:.7e}  {s:.7e}" for x, y, s in zip(radial, intensity, sigma)]
    _write_text(Path(path), "\n".join(lines + rows) + "\n")
    return len(rows)


def write_chi(path: str | Path, result: IntegrationResult, title: str) -> int:
    """Write a pattern as a Fit2D ``.chi`` file.

    The layout is Fit2D's (and GSAS-II's "Fit2D chi" exporter's): a title line, the
    radial-axis label (``2-Theta Angle (Degrees)``, ``Q (Inverse Nanometres)`` or
    ``Q (Inverse Angstroms)``), ``Intensity``, the number of points, then one
    ``radial intensity`` row per point.

    Parameters
    ----------
    path : str or Path
        Output file.
    result : IntegrationResult
        Pattern from :func:`~xrd_bluesky.science.integration.integrate_1d`.
    title : str
        First line (made a single line).

    Returns
    -------
    int
        Number of data rows written; bins with a NaN intensity are left out.
    """
    if result.unit not in CHI_LABELS:
        raise ValueError(f"no Fit2D .chi label for radial unit {result.unit!r}; use one of {sorted(CHI_LABELS)}")
    radial, intensity, _, _ = _finite_rows(result)
    lines = [_one_line(title), CHI_LABELS[result.unit], "Intensity", f"       {len(radial)}"]
    lines += [f" {x:.7e}   {y:.7e}" for x, y in zip(radial, intensity)]
    _write_text(Path(path), "\n".join(lines) + "\n")
    return len(radial)


# --------------------------------------------------------------------------- command

def _polarization(text: str) -> float | None:
    """argparse type of ``--polarization``: a factor in [-1, 1] or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in [-1, 1] or 'none'") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"polarization factor {value} is outside [-1, 1]")
    return value


def add_parser(subparsers) -> None:
    """Add the ``integrate`` subcommand to an argparse ``subparsers`` object.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers()``; the new parser's
        ``func`` default is :func:`run`.
    """
    p = subparsers.add_parser(
        "integrate", help="azimuthally integrate image files to .xye and Fit2D .chi patterns",
        description="Integrate each frame of each file to OUT_DIR/<name>.xye (radial, intensity, sigma) "
                    "and OUT_DIR/<name>.chi (Fit2D). With --stitch, integrate the frames of a detector on a 2theta "
                    f"arm into one pattern, OUT_DIR/{STITCHED}.xye and .chi (counts per steradian), as pyFAI's "
                    "MultiGeometry does. Empty bins (no valid pixel) are left out.")
    p.add_argument("frames", nargs="*", metavar="FRAMES",
                   help=f"image files: TIFF/EDF/CBF (fabio) or HDF5 {'/'.join(HDF5_SUFFIXES)} at {HDF5_DATASET}; "
                        "with --stitch, frames the positions CSV lists (default: every frame it lists)")
    p.add_argument("--poni", help="geometry (pyFAI PONI file); required without --stitch")
    p.add_argument("--stitch", action="store_true",
                   help="stitch the frames of a 2theta arm into one pattern: needs --goniometer, --positions, --arm")
    p.add_argument("--goniometer", metavar="MODEL.json",
                   help="geometry as a function of the arm angle (pyFAI goniometer JSON, e.g. from "
                        "xrd-bluesky calibrate --positions), with --stitch")
    p.add_argument("--positions", metavar="CSV",
                   help=f"positions CSV: a '{FILE_COLUMN}' column (paths relative to the CSV's folder) and the "
                        "arm angle column named by --arm, with --stitch")
    p.add_argument("--arm", metavar="COLUMN", help="column of the arm angle (deg) in the positions CSV, e.g. tth_deg")
    p.add_argument("--dark", help="dark image of the same exposure (counts); several frames are averaged")
    p.add_argument("--gain", help="gain map: frames are divided by it; non-positive or non-finite pixels are masked")
    p.add_argument("--mask", help="mask image, non-zero = bad pixel")
    p.add_argument("--npt", type=whole_number_in(2, MAX_RADIAL_BINS, "bins"), default=2000,
                   help="number of radial bins (default: 2000)")
    p.add_argument("--unit", default="q_nm^-1", choices=sorted(UNITS),
                   help="radial unit: q (1/nm or 1/A) or 2-theta (deg) (default: q_nm^-1)")
    p.add_argument("--polarization", type=_polarization, default=DEFAULT_POLARIZATION, metavar="F",
                   help=f"pyFAI polarization factor in [-1, 1], or 'none' (default: {DEFAULT_POLARIZATION})")
    add_detector_options(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output directory (created if missing)")
    p.set_defaults(func=run)


def _versions() -> dict[str, str]:
    import pyFAI

    from . import __version__

    return {"xrd_bluesky_version": __version__, "pyFAI_version": str(getattr(pyFAI, "version", "unknown"))}


def run(args: argparse.Namespace) -> int:
    """Integrate the files of ``args`` (see :func:`add_parser`) and write the patterns:
    one per frame, or with ``--stitch`` one of all frames (:func:`run_stitched`).

    Every input is read and checked before the first frame is integrated: the output
    directory, the PONI (its detector shape from the file or ``--detector``/``--shape``),
    the dark (its exposure and level against each frame), the gain map and the mask.
    Saturated and marker pixels are masked (``--max-count``). Prints one line per frame:
    its name, the number of points written and the radial range with its unit.

    Returns
    -------
    int
        0.

    Raises
    ------
    UsageError
        Two frames would write the same output file; no frame or no ``--poni`` without
        ``--stitch``; ``--goniometer``, ``--positions`` or ``--arm`` without ``--stitch``.
    OutputError
        The output directory cannot be written.
    GeometryError
        Missing, invalid or shape-less PONI file; unusable bins.
    CorruptFrameError
        An unreadable, truncated or corrupt frame, dark, gain or mask file (named).
    ShapeMismatchError
        A frame, dark, gain or mask whose shape does not fit the detector (named).
    ImplausibleInputError
        A dark brighter than the frames, a gain map not normalised, a mask that masks
        most pixels (named).
    InvalidFrameError
        A frame whose every pixel is masked, non-finite, negative or saturated (named).
    """
    polarization = args.polarization
    if isinstance(polarization, str):  # a Namespace built by hand
        polarization = _polarization(polarization)
    if getattr(args, "stitch", False):
        return run_stitched(args, polarization)
    arm_options = [option for option in ("goniometer", "positions", "arm") if getattr(args, option, None)]
    if arm_options:
        raise UsageError(f"{', '.join('--' + o for o in arm_options)} describe the frames of a 2theta arm: "
                         "they need --stitch (one pattern of all frames)")
    if not args.frames:
        raise UsageError("give at least one frame to integrate")
    if args.poni is None:
        raise UsageError("give the geometry: --poni PONI (or --stitch with --goniometer, --positions and --arm)")
    stems = [Path(f).stem for f in args.frames]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise UsageError(f"several input files share the name {', '.join(duplicates)}; their outputs would "
                         "overwrite each other")
    for path, role in [*((f, "frame") for f in args.frames), (args.dark, "dark"), (args.gain, "gain"),
                       (args.mask, "mask")]:
        if path:
            require_file(path, role)
    out = check_writable(args.output, directory=True)
    poni = read_geometry(args.poni, detector=getattr(args, "detector", None), shape=getattr(args, "shape", None))
    corrections = read_corrections(poni, dark=args.dark, gain=args.gain, mask=args.mask,
                                   max_count=getattr(args, "max_count", None))
    header_common = {
        "poni": args.poni, "dark": args.dark, "gain": args.gain, "mask": args.mask,
        "polarization_factor": polarization, "npt": args.npt, **_versions(),
    }
    written: set[str] = set()
    for path in args.frames:
        image = read_image(path)
        max_count = corrections.max_count_for(image)
        for name, frame in image.frames:
            if name in written:
                raise UsageError(f"frame {name} of {path} would overwrite an earlier output")
            written.add(name)
            source = _source(path, name)
            corrections.check_frame(frame, image, poni, source)
            check_saturation(frame, max_count, source)
            result = integrate_1d(frame, poni, npt=args.npt, unit=args.unit, dark=corrections.dark,
                                  flat=corrections.flat, mask=corrections.mask, polarization_factor=polarization,
                                  max_count=max_count, source=source)
            n = write_xye(out / f"{name}.xye", result, {"source": source, "max_count": max_count, **header_common},
                          wavelength_m=poni.wavelength)
            write_chi(out / f"{name}.chi", result, name)
            print(f"{name}: {n} points, {_span(result, n)} -> {out / name}.xye, .chi")
    return 0


def _source(path: str | Path, name: str) -> str:
    """What frame ``name`` of the file ``path`` is, for messages: the file, or the file
    and the frame's index in a stack."""
    return str(path) if name == Path(path).stem else f"{path} frame {int(name.rsplit('_', 1)[1])}"


def _span(result: IntegrationResult, written: int) -> str:
    """The radial range of the ``written`` bins of ``result`` with its unit."""
    radial = result.radial[np.isfinite(result.intensity) & np.isfinite(result.sigma)]
    span = f"{radial.min():.5g} to {radial.max():.5g}" if written else "empty"
    return f"{result.unit} {span} {result.radial_units}"


def run_stitched(args: argparse.Namespace, polarization: float | None) -> int:
    """Integrate the frames of a detector on a 2theta arm into one pattern,
    ``OUT_DIR/stitched.xye`` and ``.chi``, with pyFAI ``MultiGeometry``'s definition.

    Each frame file is taken at the arm angle its row of the positions CSV gives, on
    the geometry the goniometer model gives at that angle; all are integrated
    (:class:`~xrd_bluesky.science.corrected_integration.CorrectedIntegrator`, counts
    per steradian) into the same ``npt`` bins over the radial range all positions
    cover, and the bin sums are added (:func:`~xrd_bluesky.science.multi_geometry.stitch`)
    before the division. One integrator exists at a time, so memory does not grow with
    the number of positions. An arm angle outside the model's calibrated range is
    warned about (named), not refused.

    Parameters
    ----------
    args : argparse.Namespace
        The ``integrate`` options (see :func:`add_parser`), with ``--stitch``.
    polarization : float or None
        pyFAI polarization factor.

    Returns
    -------
    int
        0.

    Raises
    ------
    UsageError
        ``--goniometer``, ``--positions`` or ``--arm`` missing; ``--poni``,
        ``--detector`` or ``--shape`` given (the goniometer file holds the detector), or a
        PONI file as ``--goniometer``; a
        model of more than one axis (a translation stage); a positions CSV that is unreadable, lists a file
        twice or does not list a given frame.
    MissingMetadataError
        A positions CSV without the ``file`` or the ``--arm`` column, or with a
        position that is not a finite number (the line is named).
    GeometryError
        An unreadable goniometer file, a geometry it cannot give at an arm angle; as
        for the per-frame integration.
    OutputError, CorruptFrameError, ShapeMismatchError, ImplausibleInputError, InvalidFrameError
        As for the per-frame integration (named).
    """
    from .science.corrected_integration import CorrectedIntegrator
    from .science.multi_geometry import covered_radial_range, stitch
    from .science.position_models import read_goniometer_json

    missing = [f"--{option}" for option in ("goniometer", "positions", "arm") if not getattr(args, option, None)]
    if missing:
        raise UsageError(f"--stitch needs --goniometer MODEL.json, --positions CSV and --arm COLUMN "
                         f"({', '.join(missing)} missing)")
    given = [f"--{option}" for option in ("poni", "detector", "shape") if getattr(args, option, None)]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be used with --stitch: the goniometer file {args.goniometer} "
                         "gives the geometry and the detector at every arm angle")
    if Path(args.goniometer).suffix.lower() == ".poni":
        raise UsageError(f"--goniometer {args.goniometer} is a PONI file, one fixed geometry; --stitch needs the "
                         "arm's model as pyFAI goniometer JSON (xrd-bluesky calibrate --positions ... -o MODEL.json)")
    for path, role in ((args.dark, "dark"), (args.gain, "gain"), (args.mask, "mask")):
        if path:
            require_file(path, role)
    positions = frame_positions(args.positions, args.arm, args.frames)
    out = check_writable(args.output, directory=True)
    model = read_goniometer_json(args.goniometer)
    axes = model.axes
    if len(axes) != 1:
        raise UsageError(f"goniometer file {args.goniometer} has the axes {', '.join(axes)}; the positions "
                         f"CSV gives one (--arm {args.arm})")
    placed = [(path, model.position_type(value)) for path, value in positions]
    for path, position in placed:
        outside = model.outside_calibrated_range(position)
        if outside:
            warnings.warn(f"{path}: {outside}", PlausibilityWarning, stacklevel=2)
    ponis = [model.poni_at(position) for _, position in placed]
    radial_range = covered_radial_range(ponis, args.unit)
    corrections = read_corrections(ponis[0], dark=args.dark, gain=args.gain, mask=args.mask,
                                   max_count=getattr(args, "max_count", None))
    total, n_frames, max_counts = None, 0, set()
    for (path, _), poni in zip(placed, ponis):
        image = read_image(path)
        max_count = corrections.max_count_for(image)
        max_counts.add(max_count)
        integrator = CorrectedIntegrator(poni, npt=args.npt, unit=args.unit, radial_range=radial_range,
                                         mask=corrections.mask, gain=corrections.flat, dark=corrections.dark,
                                         polarization_factor=polarization, max_count=max_count)
        for name, frame in image.frames:
            source = _source(path, name)
            corrections.check_frame(frame, image, poni, source)
            check_saturation(frame, max_count, source)
            total = stitch([total, integrator.sums(frame, source)])
            n_frames += 1
    result = total.result()
    header = {
        "goniometer": args.goniometer, "positions": args.positions, "arm_column": args.arm,
        "frames": f"{n_frames} from {len(placed)} files",
        "radial_range": f"{radial_range[0]:.8g} to {radial_range[1]:.8g}",
        "dark": args.dark, "gain": args.gain, "mask": args.mask,
        "max_count": ", ".join(sorted("none" if m is None else f"{m:g}" for m in max_counts)),
        "polarization_factor": polarization, "npt": args.npt, **_versions(),
    }
    n = write_xye(out / f"{STITCHED}.xye", result, header, wavelength_m=ponis[0].wavelength,
                  intensity_label=STERADIAN_INTENSITY)
    write_chi(out / f"{STITCHED}.chi", result, f"{STITCHED} from {n_frames} frames of {args.positions}")
    print(f"{STITCHED}: {n} points from {n_frames} frames at {len(placed)} arm angles, {_span(result, n)} "
          f"-> {out / STITCHED}.xye, .chi")
    return 0
