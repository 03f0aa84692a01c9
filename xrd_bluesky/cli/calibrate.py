"""``xrd-bluesky calibrate``: refine the geometry of one calibrant frame from a guess PONI,
or the model of a detector on a 2theta arm from calibrant frames at several arm angles."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import InvalidFrameError, UsageError
from ..frames.reader import read_image, require_file
from ..outputs import check_writable, verify_written
from ..science.calibration.position_models import ARM_PLANES
from ..science.geometry import Poni
from ..science.reduction.input_checks import check_saturation
from ..science.reduction.integration import describe_invalid, invalid_pixels
from ..science.units import HC_KEV_ANGSTROM
from ..sources.file_inputs import FrameCorrections, read_corrections, read_geometry
from ..sources.positions_csv import FILE_COLUMN, frame_positions
from .options import add_detector_options, add_wavelength_options, number_in


def add_parser(subparsers) -> None:
    """Add the ``calibrate`` subcommand."""
    p = subparsers.add_parser(
        "calibrate", help="refine the geometry of one calibrant frame, or the model of a detector on a 2theta arm",
        description="One frame: refine its geometry from the guess PONI and write the refined PONI. With "
                    "--positions and --arm: refine the model of a detector on a 2theta arm (the geometry at zero "
                    "arm rotation, the arm reading there (offset) and the degrees of rotation per degree of "
                    "reading (scale)) from frames at several arm angles and write it as pyFAI goniometer JSON; "
                    "frames at which no ring is found are skipped and named.")
    p.add_argument("frames", nargs="*", metavar="FRAMES",
                   help="calibrant image (any format fabio reads, or HDF5; the frames of a file are averaged): "
                        "exactly one without --positions; with --positions, frames the CSV lists (default: "
                        "every frame it lists)")
    p.add_argument("--calibrant", required=True, help="pyFAI calibrant name, e.g. CeO2, LaB6, Si, AgBh")
    add_wavelength_options(p)
    p.add_argument("--guess", required=True,
                   help="initial geometry (PONI file); with --positions, the rough geometry at arm reading 0")
    p.add_argument("--positions", metavar="CSV",
                   help=f"positions CSV: a '{FILE_COLUMN}' column (paths relative to the CSV's folder) and the "
                        "arm angle column named by --arm")
    p.add_argument("--arm", metavar="COLUMN", help="column of the arm angle (deg) in the positions CSV, e.g. tth_deg")
    p.add_argument("--plane", choices=ARM_PLANES,
                   help="plane the arm turns the detector in, with --positions (default: vertical)")
    p.add_argument("--mask", help="mask image, non-zero = bad pixel")
    p.add_argument("--dark", help="dark image of the same exposure (counts); several frames are averaged")
    p.add_argument("--max-residual-deg", type=number_in(1e-6, 1.0, "deg"), default=0.02,
                   help="largest accepted rms residual (deg)")
    add_detector_options(p)
    p.add_argument("-o", "--output", required=True,
                   help="refined PONI file; with --positions, the arm model (pyFAI goniometer JSON)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Calibrate one frame (write the refined PONI) or, with ``--positions`` and
    ``--arm``, a detector on a 2theta arm (write its goniometer JSON); print the result.

    The output file is checked writable and every input read and checked (shape,
    dark, mask, saturated pixels) before the refinement starts; the output is verified
    on disk after writing.

    Raises
    ------
    UsageError
        ``--positions`` without ``--arm`` or the reverse, ``--plane`` without them, not
        exactly one frame without them; a positions CSV that is unreadable, lists a
        file twice or does not list a given frame.
    MissingMetadataError
        A positions CSV without the ``file`` or the ``--arm`` column, or with a
        position that is not a finite number (the line is named).
    OutputError, GeometryError, CorruptFrameError, ShapeMismatchError, ImplausibleInputError
        Unusable inputs or output (named).
    CalibrationError
        Rings not found, a residual too large, rings or peaks that contradict the
        calibrant or the energy.
    """
    if (args.positions is None) != (args.arm is None):
        raise UsageError("--positions CSV and --arm COLUMN go together: the CSV gives each frame's arm angle in "
                         f"the column --arm names ({'--arm' if args.arm is None else '--positions'} is missing)")
    if args.positions is not None:
        return _run_arm(args)
    if args.plane is not None:
        raise UsageError("--plane is the plane of a 2theta arm: it needs --positions CSV and --arm COLUMN")
    if len(args.frames) != 1:
        raise UsageError(f"give exactly one calibrant frame without --positions, not {len(args.frames)}; several "
                         "frames at different arm angles need --positions CSV and --arm COLUMN")
    return _run_one(args)


def _inputs(args: argparse.Namespace, frames: list[Path]) -> tuple[Path, float, Poni, FrameCorrections]:
    """Check the inputs and the output of ``args`` before anything is computed; return
    the output path, the wavelength (A), the guess geometry at that wavelength and the
    corrections (dark, mask, saturation level)."""
    for path, role in [*((f, "frame") for f in frames), (args.dark, "dark"), (args.mask, "mask")]:
        if path:
            require_file(path, role)
    output = check_writable(args.output)
    wavelength_A = args.wavelength_A if args.wavelength_A is not None else HC_KEV_ANGSTROM / args.energy_keV
    guess = replace(read_geometry(args.guess, detector=args.detector, shape=args.shape),
                    wavelength=wavelength_A * 1e-10)
    corrections = read_corrections(guess, dark=args.dark, mask=args.mask, max_count=args.max_count)
    return output, wavelength_A, guess, corrections


def _calibrant_frame(path: str | Path, poni: Poni, corrections: FrameCorrections) -> tuple[np.ndarray, np.ndarray]:
    """The dark-subtracted mean of the frames of the calibrant file ``path`` and its
    invalid pixels (True: gap, mask, non-finite, negative or saturated), checked
    against the detector of ``poni`` and the dark.

    Raises
    ------
    CorruptFrameError, ShapeMismatchError, ImplausibleInputError
        An unreadable frame, one that does not fit the detector or the dark (named).
    InvalidFrameError
        Every pixel is masked or invalid.
    """
    image = read_image(path)
    frame = image.mean()
    corrections.check_frame(image.frames[0][1], image, poni, str(path))
    max_count = corrections.max_count_for(image)
    check_saturation(image.frames[0][1], max_count, str(path))
    bad = invalid_pixels(frame, poni, max_count, corrections.mask, str(path))
    if bad.all():
        raise InvalidFrameError(f"{path}: every pixel is masked or invalid, no ring to find "
                                f"({describe_invalid(image.frames[0][1], max_count)})")
    if corrections.dark is not None:
        frame = frame - corrections.dark
    return frame, bad


def _print_geometry(p: Poni) -> None:
    """Print a geometry: PONI parameters, Fit2D beam centre, direct distance and tilt."""
    f2 = p.fit2d()
    print(f"  dist {p.dist * 1e3:.4f} mm  poni1 {p.poni1 * 1e3:.4f} mm  poni2 {p.poni2 * 1e3:.4f} mm")
    print("  " + "  ".join(f"{name} {math.degrees(getattr(p, name)):.4f} deg" for name in ("rot1", "rot2", "rot3")))
    print(f"  beam centre x {f2['centerX']:.2f} px  y {f2['centerY']:.2f} px  "
          f"direct distance {f2['directDist']:.3f} mm  tilt {f2['tilt']:.4f} deg")


def _run_one(args: argparse.Namespace) -> int:
    """Calibrate the one frame of ``args`` and write the refined PONI."""
    from ..science.calibration.refinement import refine_position
    from ..science.calibration.settings import CalibrationSettings

    path = args.frames[0]
    output, wavelength_A, guess, corrections = _inputs(args, [path])
    frame, bad = _calibrant_frame(path, guess, corrections)
    result = refine_position(np.where(bad, 0.0, frame), guess, args.calibrant, mask=bad, label=str(path),
                             settings=CalibrationSettings(max_residual_deg=args.max_residual_deg))
    result.poni.write(output)
    verify_written(output)
    print(f"refined geometry of {path} ({args.calibrant}, {wavelength_A:.5f} A):")
    _print_geometry(result.poni)
    print(f"  residual {result.residual_deg:.5f} deg rms over {result.points} points on {result.rings} rings")
    print(f"written {output}")
    return 0


def _run_arm(args: argparse.Namespace) -> int:
    """Calibrate the arm model from the frames of the positions CSV and write it as
    pyFAI goniometer JSON."""
    from ..science.calibration.arm import ArmFrame, calibrate_arm
    from ..science.calibration.position_models import ArmModel, write_goniometer_json
    from ..science.calibration.settings import CalibrationSettings

    positions = frame_positions(args.positions, args.arm, args.frames)
    output, wavelength_A, guess, corrections = _inputs(args, [])
    rough = ArmModel(guess, plane=args.plane or ARM_PLANES[0])
    frames = []
    for path, angle in positions:
        frame, bad = _calibrant_frame(path, guess, corrections)
        # negative is invalid to calibrate_arm: a valid pixel that the dark subtraction
        # took below zero (noise) is clipped to 0, so that it does not mask its neighbours' points
        frames.append(ArmFrame(str(path), rough.position_type(angle), np.where(bad, -1.0, np.maximum(frame, 0.0))))
    result = calibrate_arm(frames, rough, args.calibrant,
                           settings=CalibrationSettings(max_residual_deg=args.max_residual_deg))
    write_goniometer_json(result.model, output)
    verify_written(output)
    model = result.model
    print(f"refined arm model from {len(result.used)} of {len(frames)} frames of {args.positions} "
          f"({args.calibrant}, {wavelength_A:.5f} A, {model.plane} arm, angle column {args.arm}):")
    print(f"  geometry at arm rotation zero (arm reading {model.offset_deg:.4f} deg):")
    _print_geometry(model.reference)
    low, high = model.calibrated_range_deg
    print(f"  arm angle offset {model.offset_deg:.4f} deg  scale {model.scale:.6f}  "
          f"calibrated range {low:.3f} to {high:.3f} deg")
    print(f"  residual {result.residual_deg:.5f} deg rms over {result.points} points on {len(result.used)} frames")
    for label in result.used:
        print(f"  {label}: {result.rings_per_frame.get(label, 0)} rings")
    for label, reason in result.skipped.items():
        print(f"  skipped {label}: {reason}")
    print(f"written {output}")
    return 0
