"""``xrd-bluesky integrate``: azimuthal integration of image files to ``.xye`` and ``.chi``.

The frames (TIFF/EDF/CBF through fabio; HDF5/NeXus at ``/entry/data/data``) become a
run in memory that goes through the live router (:mod:`~xrd_bluesky.sources.file_runs`):
the patterns are those of the live integration, in counts per steradian (absolute solid
angle), on bins spanning what the detector's pixel centres cover. For each frame the
command writes into the output directory:

``<name>.xye``
    Three columns, radial position, intensity, 1-sigma error, after ``#`` comment lines
    that name the radial unit, the PONI, dark, gain and mask files, the polarization
    factor and the versions of xrd-bluesky and pyFAI.
``<name>.chi``
    The classic Fit2D "chi" file: title line, radial-axis label line (Fit2D's own
    labels, e.g. ``2-Theta Angle (Degrees)``, ``Q (Inverse Nanometres)``), intensity
    label line, number-of-points line, then ``radial intensity`` rows, as Fit2D and
    GSAS-II's "Fit2D chi" exporter write it.

With ``--stitch``, all frames are integrated into one pattern, ``stitched.xye`` and
``stitched.chi``, as pyFAI's ``MultiGeometry`` does: every frame into the same bins over
the range all geometries cover, in counts per steradian; the sums are added, then
divided. Each frame's geometry is that of a 2theta arm's model at its angle
(``--goniometer``, ``--positions`` CSV and its ``--arm`` column), or its own PONI
(``--poni`` per file, or a positions CSV with a ``poni`` column).

With monitors (``--i0``/``--it``/``--exposure``/``--thickness`` or a ``--monitors`` CSV
per file), the patterns are also put on the absolute scale (1/cm/sr), ``<name>_absolute.xye``
(``stitched_absolute.xye`` with ``--stitch``), times the factor of a ``--standard``
(e.g. water); with ``--background`` files, ``subtracted.xye`` is all frames minus the
background (Eq. S1 of :mod:`~xrd_bluesky.science.reduction.absolute_scale`). Their headers name the
inputs, monitors, flux calibration, thickness, standard and background.

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
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingMetadataError, MonitorError, PlausibilityWarning, UsageError
from ..frames.hdf5 import HDF5_DATASET, HDF5_SUFFIXES
from ..frames.reader import read_image, require_file
from ..outputs import check_writable
from ..schema import InstrumentSettings
from ..science.calibration.position_models import read_goniometer_json
from ..science.gain_map.source import GainMapSource
from ..science.geometry import Poni
from ..science.reduction.absolute_scale import (
    KNOWN_STANDARDS,
    Exposure,
    ReferencePattern,
)
from ..science.reduction.input_checks import check_saturation
from ..science.reduction.integration import (
    MAX_RADIAL_BINS,
    MIN_RADIAL_BINS,
    UNITS,
    IntegrationResult,
    valid_somewhere,
)
from ..science.reduction.monitors import AIR_TRANSMISSION, FluxCalibration
from ..sources.file_inputs import read_corrections, read_geometry
from ..sources.file_runs import (
    DerivedRun,
    FileFrame,
    FileRun,
    analyse,
    reference_pattern,
)
from ..sources.frame_table import positive_cell, read_table
from ..sources.positions_csv import FILE_COLUMN, frame_positions
from ..store.pattern_files import (
    ABSOLUTE_INTENSITY,
    STERADIAN_INTENSITY,
    software_versions,
    write_chi,
    write_xye,
)
from .options import add_detector_options, number_in, whole_number_in

#: Default polarization factor: horizontally polarised synchrotron beam.
DEFAULT_POLARIZATION = 0.99

#: Names of the stitched and background-subtracted patterns' files in the output directory.
STITCHED = "stitched"
SUBTRACTED = "subtracted"

#: Column of a frame file's PONI in a positions CSV.
PONI_COLUMN = "poni"
#: Columns of the monitors CSV, with their units.
MONITOR_COLUMNS = {"i0": "counts", "it": "counts", "exposure_s": "s", "thickness_mm": "mm"}
#: q in 1/nm per q in each unit (the live integration's q is in 1/nm).
Q_PER_NM = {"q_nm^-1": 1.0, "q_A^-1": 10.0}
#: I0 counts to flux: the live default (APS 8-ID), recorded in the absolute patterns' headers.
FLUX = FluxCalibration()


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
        description="Integrate each frame of each file to OUT_DIR/<name>.xye (radial, intensity, sigma; counts per "
                    "steradian) and OUT_DIR/<name>.chi (Fit2D), through the same analysis as live data. With "
                    f"--stitch, integrate all frames (a 2theta arm, or one PONI per frame) into one pattern, "
                    f"OUT_DIR/{STITCHED}.xye and .chi, as pyFAI's MultiGeometry does. With monitors (--i0/--it or "
                    "--monitors), also the absolute scale (1/cm/sr): <name>_absolute.xye, "
                    f"{STITCHED}_absolute.xye, and with --background {SUBTRACTED}.xye. Empty bins are left out.")
    p.add_argument("frames", nargs="*", metavar="FRAMES",
                   help=f"image files: TIFF/EDF/CBF (fabio) or HDF5 {'/'.join(HDF5_SUFFIXES)} at {HDF5_DATASET}; "
                        "with --positions, frames the CSV lists (default: every frame it lists)")
    p.add_argument("--poni", action="append",
                   help="geometry (pyFAI PONI file): one for all frames, or one per frame file in their order "
                        "(repeat --poni)")
    p.add_argument("--stitch", action="store_true",
                   help="integrate all frames into one pattern: a 2theta arm (--goniometer, --positions, --arm) or "
                        "frames each with its PONI (--poni per file, or --positions CSV with a 'poni' column)")
    p.add_argument("--goniometer", metavar="MODEL.json",
                   help="geometry as a function of the arm angle (pyFAI goniometer JSON, e.g. from "
                        "xrd-bluesky calibrate --positions), with --stitch")
    p.add_argument("--positions", metavar="CSV",
                   help=f"positions CSV: a '{FILE_COLUMN}' column (paths relative to the CSV's folder) and the "
                        f"arm angle column named by --arm, or a '{PONI_COLUMN}' column (PONI of each file)")
    p.add_argument("--arm", metavar="COLUMN", help="column of the arm angle (deg) in the positions CSV, e.g. tth_deg")
    p.add_argument("--dark", help="dark image of the same exposure (counts); several frames are averaged")
    p.add_argument("--gain", help="gain map: frames are divided by it; non-positive or non-finite pixels are masked")
    p.add_argument("--mask", help="mask image, non-zero = bad pixel")
    p.add_argument("--npt", type=whole_number_in(MIN_RADIAL_BINS, MAX_RADIAL_BINS, "bins"), default=2000,
                   help="number of radial bins (default: 2000)")
    p.add_argument("--unit", default="q_nm^-1", choices=sorted(UNITS),
                   help="radial unit: q (1/nm or 1/A) or 2-theta (deg) (default: q_nm^-1)")
    p.add_argument("--polarization", type=_polarization, default=DEFAULT_POLARIZATION, metavar="F",
                   help=f"pyFAI polarization factor in [-1, 1], or 'none' (default: {DEFAULT_POLARIZATION})")
    add_detector_options(p)
    counts = number_in(1e-300, math.inf, "counts")
    p.add_argument("--i0", type=counts, metavar="COUNTS",
                   help="upstream ion-chamber counts during each frame's exposure (counts), for the absolute scale")
    p.add_argument("--it", type=counts, metavar="COUNTS",
                   help="downstream (transmitted) ion-chamber counts during each frame's exposure (counts)")
    p.add_argument("--exposure", type=number_in(1e-300, math.inf, "s"), metavar="S",
                   help="exposure of each frame (s; default: the file header's)")
    p.add_argument("--thickness", type=number_in(1e-300, math.inf, "mm"), metavar="MM",
                   help="sample thickness (mm), for the absolute scale")
    p.add_argument("--monitors", metavar="CSV",
                   help=f"per-file monitors: a '{FILE_COLUMN}' column and any of {', '.join(MONITOR_COLUMNS)} "
                        "(counts, counts, s, mm); a file it does not list takes --i0, --it, --exposure, --thickness")
    p.add_argument("--background", nargs="+", metavar="FILE",
                   help=f"background frames (same monitors' options or rows): subtracted on the absolute scale, "
                        f"OUT_DIR/{SUBTRACTED}.xye")
    p.add_argument("--standard", nargs="+", metavar="FILE",
                   help="frames of a secondary standard (see --standard-name): its factor (known / measured) "
                        "multiplies the absolute patterns")
    p.add_argument("--standard-name", dest="standard_name", default="water", choices=sorted(KNOWN_STANDARDS),
                   help="which known standard --standard is (default: water)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output directory (created if missing)")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class _Placed:
    """A frame file with its geometry and what the headers call that geometry."""

    path: Path
    poni: Poni
    label: str


def run(args: argparse.Namespace) -> int:
    """Integrate the files of ``args`` (see :func:`add_parser`) and write the patterns.

    The frames become a run in memory that goes through the live analysis
    (:mod:`~xrd_bluesky.sources.file_runs`): one pattern per frame in counts per
    steradian, or with ``--stitch`` one of all frames, and with monitors the absolute
    scale (1/cm/sr) with the background subtracted and the standard's factor applied.
    Every input is read and checked before the first frame is integrated: the output
    directory, the PONIs (their detector shape from the file or ``--detector``/
    ``--shape``), the dark (its exposure and level against each frame), the gain map,
    the mask, the monitors. Saturated and marker pixels are masked (``--max-count``).
    Prints one line per pattern: its name, the number of points written and the radial
    range with its unit.

    Returns
    -------
    int
        0.

    Raises
    ------
    UsageError
        Options that do not go together (named); two frames would write the same file;
        no frame or no geometry.
    OutputError
        The output directory cannot be written.
    GeometryError
        Missing, invalid or shape-less PONI file; an unreadable goniometer file.
    MissingMetadataError
        A CSV without a needed column; a monitor, exposure or thickness missing for the
        absolute scale (the frame named).
    MonitorError
        A monitor, exposure or thickness that is not a positive number, a transmission
        above 1 (the frame or CSV line named).
    CorruptFrameError
        An unreadable, truncated or corrupt file, or a CSV naming a missing file (named).
    ShapeMismatchError
        A frame, dark, gain or mask whose shape does not fit the detector (both named).
    ImplausibleInputError
        A dark brighter than the frames, a gain map not normalised, a mask that masks
        most pixels (named).
    InvalidFrameError
        A frame whose every pixel is masked, non-finite, negative or saturated (named).
    """
    polarization = args.polarization
    if isinstance(polarization, str):  # a Namespace built by hand
        polarization = _polarization(polarization)
    ponis = [args.poni] if isinstance(args.poni, str) else list(args.poni or [])
    absolute = _check_options(args, ponis)
    placed = _placements(args, ponis)
    for path, role in [(args.dark, "dark"), (args.gain, "gain"), (args.mask, "mask"),
                       *((f, "background") for f in args.background or ()),
                       *((f, "standard") for f in args.standard or ())]:
        if path:
            require_file(path, role)
    out = check_writable(args.output, directory=True)
    reference = placed[0].poni
    geometries = len({p.poni for p in placed})
    if (args.background or args.standard) and geometries > 1:
        raise UsageError(f"--background and --standard frames are integrated on one geometry; the frames here have "
                         f"{geometries}: stitch background and standard separately")
    corrections = read_corrections(reference, dark=args.dark, gain=args.gain, mask=args.mask,
                                   max_count=getattr(args, "max_count", None))
    table = read_table(args.monitors, "monitors CSV", known=MONITOR_COLUMNS) if getattr(args, "monitors", None) else {}
    facts = _Facts(args, table, absolute)
    sample = _file_run(placed, corrections, facts, Path(placed[0].path).stem, stitch=args.stitch)
    extra = [_file_run([_Placed(Path(f), reference, placed[0].label) for f in files], corrections, facts, role,
                       stitch=True, standard=args.standard_name if role == "standard" else None)
             if files else None for role, files in (("standard", args.standard), ("background", args.background))]
    instrument = InstrumentSettings(mask=corrections.mask, mask_file=args.mask, polarization_factor=polarization,
                                    flux_calibration=FLUX)
    gain_map = (None if corrections.flat is None
                else GainMapSource(corrections.flat, np.zeros_like(corrections.flat, bool)))
    common = dict(npt=args.npt, instrument=instrument, gain_map=gain_map)
    references, metadata = {}, {}
    for (role, key, files), run_ in zip((("standard", "standard_uid", args.standard),
                                         ("background", "background_uid", args.background)), extra):
        if run_ is not None:
            pattern = reference_pattern(analyse(run_, **common), f"{role} {' '.join(map(str, files))}")
            references[pattern.uid], metadata[key] = pattern, pattern.uid
    derived = analyse(sample, references=references, metadata=metadata, **common)
    header = {"ponis": {p.poni: p.label for p in placed}, **_inputs_header(args), "dark": args.dark,
              "gain": args.gain, "mask": args.mask, "polarization_factor": polarization, "npt": args.npt,
              **software_versions()}
    writer = _Writer(out, args.unit, reference.wavelength)
    if args.stitch:
        _write_stitched(writer, derived, sample, header,
                        f"{STITCHED} from {len(sample.frames)} frames of {args.positions or 'the PONIs given'}")
    else:
        _write_frames(writer, derived, sample, header)
    if absolute:
        _write_absolute(writer, derived, sample, {**header, "standard_name": args.standard_name,
                                                  "standard_files": " ".join(args.standard or ()),
                                                  "background_files": " ".join(args.background or ())},
                        args.stitch, references)
    return 0


def _check_options(args: argparse.Namespace, ponis: list[str]) -> bool:
    """Refuse options that do not go together; whether the absolute scale is asked for."""
    arm_options = [f"--{o}" for o in ("goniometer", "arm") if getattr(args, o, None)]
    if arm_options and not args.stitch:
        raise UsageError(f"{', '.join(arm_options)} describe the frames of a 2theta arm: they need --stitch "
                         "(one pattern of all frames)")
    if args.stitch and arm_options:
        missing = [f"--{o}" for o in ("goniometer", "positions", "arm") if not getattr(args, o, None)]
        if missing:
            raise UsageError(f"--stitch of a 2theta arm needs --goniometer MODEL.json, --positions CSV and --arm "
                             f"COLUMN ({', '.join(missing)} missing)")
        given = [f"--{o}" for o in ("poni", "detector", "shape") if getattr(args, o, None)]
        if given:
            raise UsageError(f"{', '.join(given)} cannot be used with --stitch: the goniometer file "
                             f"{args.goniometer} gives the geometry and the detector at every arm angle")
        if Path(args.goniometer).suffix.lower() == ".poni":
            raise UsageError(f"--goniometer {args.goniometer} is a PONI file, one fixed geometry; --stitch needs "
                             "the arm's model as pyFAI goniometer JSON "
                             "(xrd-bluesky calibrate --positions ... -o MODEL.json)")
    elif args.positions and ponis:
        raise UsageError("give the geometry either as --poni or as the 'poni' column of --positions, not both")
    elif not args.positions and not ponis:
        raise UsageError("give the geometry: --poni PONI (or --stitch with --goniometer, --positions and --arm)")
    elif not args.positions and not args.frames:
        raise UsageError("give at least one frame to integrate")
    monitors = [f"--{o}" for o in ("i0", "it", "monitors") if getattr(args, o, None)]
    needs = [f"--{o}" for o in ("background", "standard") if getattr(args, o, None)]
    if needs and not monitors:
        raise UsageError(f"{', '.join(needs)} work on the absolute scale: give the monitors (--i0 and --it, or "
                         "--monitors CSV), exposure and thickness")
    if monitors and args.unit == "2th_deg":
        raise UsageError(f"the absolute scale ({', '.join(monitors)}) is a pattern in q: use --unit q_nm^-1 or q_A^-1")
    return bool(monitors)


def _placements(args: argparse.Namespace, ponis: list[str]) -> list[_Placed]:
    """The frame files with their geometries: from the arm's model at each angle of the
    positions CSV, from its ``poni`` column, or from ``--poni`` (one, or one per file)."""
    detector = dict(detector=getattr(args, "detector", None), shape=getattr(args, "shape", None))
    if args.goniometer:
        return _arm_placements(args)
    if args.positions:
        table = read_table(args.positions, "positions CSV", required=(PONI_COLUMN,))
        files = [Path(f) for f in args.frames] or [Path(args.positions).parent / row[FILE_COLUMN]
                                                   for _, row in table.values()]
        unlisted = [str(f) for f in files if f.resolve() not in table]
        if unlisted:
            raise UsageError(f"positions CSV {args.positions} lists no row for {', '.join(unlisted)}")
        rows = [table[f.resolve()][1] for f in files]
        named = [Path(args.positions).parent / row[PONI_COLUMN] for row in rows]
        return [_Placed(f, read_geometry(p, **detector), str(p)) for f, p in zip(_checked(files), named)]
    if len(ponis) not in (1, len(args.frames)):
        raise UsageError(f"{len(ponis)} --poni for {len(args.frames)} frame files: give one for all, or one per file")
    geometries = {p: read_geometry(p, **detector) for p in dict.fromkeys(ponis)}
    names = ponis * len(args.frames) if len(ponis) == 1 else ponis
    return [_Placed(f, geometries[p], p) for f, p in zip(_checked([Path(f) for f in args.frames]), names)]


def _checked(files: list[Path]) -> list[Path]:
    """``files``, each an existing file, their outputs' names distinct."""
    stems = [f.stem for f in files]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise UsageError(f"several input files share the name {', '.join(twice)}; their outputs would "
                         "overwrite each other")
    for f in files:
        require_file(f, "frame")
    return files


def _arm_placements(args: argparse.Namespace) -> list[_Placed]:
    """The frames of a 2theta arm on the goniometer model's geometry at their angles;
    an angle outside the calibrated range is warned about (named)."""
    positions = frame_positions(args.positions, args.arm, args.frames)
    model = read_goniometer_json(args.goniometer)
    if len(model.axes) != 1:
        raise UsageError(f"goniometer file {args.goniometer} has the axes {', '.join(model.axes)}; the positions "
                         f"CSV gives one (--arm {args.arm})")
    placed = []
    for path, value in positions:
        position = model.position_type(value)
        outside = model.outside_calibrated_range(position)
        if outside:
            warnings.warn(f"{path}: {outside}", PlausibilityWarning, stacklevel=3)
        placed.append(_Placed(path, model.poni_at(position), f"{args.goniometer} at {args.arm}={value:g}"))
    return placed


class _Facts:
    """Monitors, exposure and thickness of each frame file: its row of the monitors
    CSV, else the options, else (exposure) the file's header."""

    def __init__(self, args: argparse.Namespace, table: dict, absolute: bool):
        self.options = {"i0": args.i0, "it": args.it, "exposure_s": args.exposure, "thickness_mm": args.thickness}
        self.table, self.csv = table, args.monitors
        self.absolute = absolute

    def of(self, path: Path) -> dict[str, float | None]:
        """The values for ``path`` (None where nothing gives one)."""
        line, row = self.table.get(Path(path).resolve(), (None, {}))
        where = f"monitors CSV {self.csv} line {line} ({path})"
        return {column: positive_cell(row, column, unit, where) or self.options[column]
                for column, unit in MONITOR_COLUMNS.items()}

    def thickness(self, paths: list[Path]) -> float | None:
        """The sample thickness (mm) of a run of ``paths`` (one value, or UsageError naming them)."""
        values = {self.of(p)["thickness_mm"] for p in paths}
        if len(values) > 1:
            raise UsageError(f"the files {', '.join(map(str, paths))} of one pattern have different thicknesses "
                             f"{sorted(values, key=str)} mm")
        return values.pop()

    def check(self, frame: FileFrame, thickness_mm: float | None) -> None:
        """Refuse (naming the frame) monitors, exposure or thickness that the absolute scale cannot use."""
        if not self.absolute:
            return
        try:
            Exposure(frame.i0, frame.it, frame.exposure_s, thickness_mm).check()
        except (MonitorError, MissingMetadataError) as exc:
            raise type(exc)(f"{frame.source}: {exc} (give --i0, --it, --exposure and --thickness, or a row of "
                            "--monitors)") from exc


def _file_run(placed: list[_Placed], corrections, facts: _Facts, sample: str, *, stitch: bool,
              standard: str | None = None) -> FileRun:
    """Read and check the frames of ``placed`` into a :class:`FileRun`."""
    thickness = facts.thickness([p.path for p in placed])
    frames, written = [], set()
    for item in placed:
        image = read_image(item.path)
        max_count = corrections.max_count_for(image)
        values = facts.of(item.path)
        for name, frame in image.frames:
            if name in written and not stitch:
                raise UsageError(f"frame {name} of {item.path} would overwrite an earlier output")
            written.add(name)
            source = _source(item.path, name)
            corrections.check_frame(frame, image, item.poni, source)
            check_saturation(frame, max_count, source,
                             lambda poni=item.poni: poni.integrator().center_array(unit="2th_deg"))
            valid_somewhere(frame, item.poni, max_count, corrections.mask, source)
            frames.append(FileFrame(name, source, frame, item.poni, values["i0"], values["it"],
                                    values["exposure_s"] or image.exposure_s, max_count))
            facts.check(frames[-1], thickness)
    return FileRun(tuple(frames), sample, thickness, corrections.dark, standard)


def _source(path: str | Path, name: str) -> str:
    """What frame ``name`` of the file ``path`` is, for messages: the file, or the file
    and the frame's index in a stack."""
    return str(path) if name == Path(path).stem else f"{path} frame {int(name.rsplit('_', 1)[1])}"


def _inputs_header(args: argparse.Namespace) -> dict:
    """What the headers say of the geometry: the arm's model and CSV, or the PONI files."""
    if args.goniometer:
        return {"goniometer": args.goniometer, "positions": args.positions, "arm_column": args.arm}
    return {"positions": args.positions} if args.positions else {}


def _pattern(data: dict, unit: str, keys: tuple[str, str, str]) -> IntegrationResult:
    """A pattern of a derived event: ``keys`` name its radial (q in 1/nm or 2theta in
    deg), intensity and sigma; q is converted to ``unit``."""
    radial, intensity, sigma = (np.asarray(data[k], dtype=float) for k in keys)
    return IntegrationResult(radial / Q_PER_NM.get(unit, 1.0), intensity, sigma, unit)


#: The derived streams' keys of a q and a 2theta pattern.
Q_KEYS = ("q", "intensity", "sigma")
TTH_KEYS = ("two_theta", "intensity_2theta", "sigma_2theta")
PRIMARY_Q_KEYS = ("q", "intensity_q", "sigma_q")


@dataclass(frozen=True)
class _Writer:
    """Writes patterns into the output directory and says so."""

    out: Path
    unit: str
    wavelength_m: float

    def write(self, name: str, result: IntegrationResult, header: dict, label: str, title: str | None = None,
              what: str = "") -> None:
        """``<name>.xye`` (and ``.chi`` when ``title``) and one line on stdout."""
        n = write_xye(self.out / f"{name}.xye", result, header, wavelength_m=self.wavelength_m, intensity_label=label)
        if title is not None:
            write_chi(self.out / f"{name}.chi", result, title)
        print(f"{name}: {n} points{what}, {_span(result, n)} -> {self.out / name}.xye" + (", .chi" if title else ""))


def _write_frames(writer: _Writer, derived: DerivedRun, run: FileRun, header: dict) -> None:
    """One pattern per frame (counts per steradian)."""
    keys = TTH_KEYS if writer.unit == "2th_deg" else PRIMARY_Q_KEYS
    for data in derived.streams["primary"]:
        frame = run.frames[data["parent_seq_num"] - 1]
        writer.write(frame.name, _pattern(data, writer.unit, keys), _frame_header(frame, header), STERADIAN_INTENSITY,
                     frame.name)


def _frame_header(frame: FileFrame, header: dict) -> dict:
    """The header of one frame's pattern: the frame, its saturation level and PONI, then ``header``."""
    return {"source": frame.source, "max_count": frame.max_count, "poni": header["ponis"][frame.poni],
            **{k: v for k, v in header.items() if k != "ponis"}}


def _run_header(derived: DerivedRun, run: FileRun, header: dict, unit: str) -> dict:
    """The header of a pattern of all frames: inputs, frames, radial range, saturation levels, parameters."""
    low, high = derived.start["parameters"]["radial_ranges"]["2th_deg" if unit == "2th_deg" else "q_nm^-1"]
    scale = Q_PER_NM.get(unit, 1.0)
    geometry = {k: header[k] for k in ("goniometer", "positions", "arm_column") if k in header}
    if "goniometer" not in header:
        geometry["poni"] = ", ".join(dict.fromkeys(header["ponis"][f.poni] for f in run.frames))
    files = dict.fromkeys(f.source.split(" frame ")[0] for f in run.frames)
    return {**geometry, "frames": f"{len(run.frames)} from {len(files)} files",
            "radial_range": f"{low / scale:.8g} to {high / scale:.8g}",
            "max_count": ", ".join(sorted({"none" if f.max_count is None else f"{f.max_count:g}" for f in run.frames})),
            **{k: v for k, v in header.items() if k not in (*geometry, "ponis")}}


def _write_stitched(writer: _Writer, derived: DerivedRun, run: FileRun, header: dict, title: str) -> None:
    """The pattern of all frames (counts per steradian), MultiGeometry's definition."""
    keys = TTH_KEYS if writer.unit == "2th_deg" else Q_KEYS
    writer.write(STITCHED, _pattern(derived.last("stitched"), writer.unit, keys),
                 _run_header(derived, run, header, writer.unit), STERADIAN_INTENSITY, title,
                 f" from {len(run.frames)} frames")


def _write_absolute(writer: _Writer, derived: DerivedRun, run: FileRun, header: dict, stitched: bool,
                    references: dict[str, ReferencePattern]) -> None:
    """The absolute patterns (1/cm/sr): per frame or of all frames, and the background-subtracted one."""
    start = derived.start
    standard = references.get(start.get("standard_uid"))
    background = references.get(start.get("background_uid"))
    scale = {"flux_calibration": f"{FLUX.slope:g} ph/s per I0 count/s + {FLUX.offset:g} ph/s (APS 8-ID)",
             "air_transmission": f"{AIR_TRANSMISSION:g}", "thickness_mm": f"{run.thickness_mm:g} mm",
             "standard": "none" if standard is None else
             f"{header['standard_name']} {header['standard_files']}, factor {standard.standard_factor:.6g}",
             "background": "none" if background is None else
             f"{header['background_files']}, thickness {background.thickness_mm:g} mm"}
    header = {k: v for k, v in header.items() if k not in ("standard_name", "standard_files", "background_files")}
    if not stitched:
        for data in derived.streams.get("absolute", []):
            frame = run.frames[data["parent_seq_num"] - 1]
            monitors = {"i0": f"{frame.i0:g} counts", "it": f"{frame.it:g} counts",
                        "exposure_s": f"{frame.exposure_s:g} s", "transmission": f"{data['transmission']:.6g}",
                        "flux_ph_s": f"{data['flux_ph_s']:.6g} ph/s"}
            writer.write(f"{frame.name}_absolute", _pattern(data, writer.unit, Q_KEYS),
                         {**monitors, **scale, **_frame_header(frame, header)}, ABSOLUTE_INTENSITY)
    else:
        writer.write(f"{STITCHED}_absolute", _pattern(derived.last("stitched_absolute"), writer.unit, Q_KEYS),
                     {**scale, **_run_header(derived, run, header, writer.unit)}, ABSOLUTE_INTENSITY,
                     what=f" from {len(run.frames)} frames")
    if background is not None:
        writer.write(SUBTRACTED, _pattern(derived.last("subtracted"), writer.unit, Q_KEYS),
                     {**scale, **_run_header(derived, run, header, writer.unit)}, ABSOLUTE_INTENSITY,
                     what=f" from {len(run.frames)} frames minus the background")


def _span(result: IntegrationResult, written: int) -> str:
    """The radial range of the ``written`` bins of ``result`` with its unit."""
    radial = result.radial[np.isfinite(result.intensity) & np.isfinite(result.sigma)]
    span = f"{radial.min():.5g} to {radial.max():.5g}" if written else "empty"
    return f"{result.unit} {span} {result.radial_units}"
