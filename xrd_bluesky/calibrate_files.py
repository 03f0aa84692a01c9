"""``xrd-bluesky calibrate``: refine the geometry of one calibrant frame from a guess PONI."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

import numpy as np

from .command_options import add_detector_options, add_wavelength_options, number_in
from .errors import InvalidFrameError
from .outputs import check_writable, verify_written
from .science.input_checks import check_saturation
from .science.integration import describe_invalid, invalid_pixels
from .science.units import HC_KEV_ANGSTROM
from .sources.file_inputs import read_corrections, read_geometry
from .sources.image_files import read_image, require_file


def add_parser(subparsers) -> None:
    """Add the ``calibrate`` subcommand."""
    p = subparsers.add_parser("calibrate", help="refine the geometry of one calibrant frame from a guess PONI")
    p.add_argument("frame", help="calibrant image (any format fabio reads, or HDF5); several frames are averaged")
    p.add_argument("--calibrant", required=True, help="pyFAI calibrant name, e.g. CeO2, LaB6, Si, AgBh")
    add_wavelength_options(p)
    p.add_argument("--guess", required=True, help="initial geometry (PONI file)")
    p.add_argument("--mask", help="mask image, non-zero = bad pixel")
    p.add_argument("--dark", help="dark image of the same exposure (counts); several frames are averaged")
    p.add_argument("--max-residual-deg", type=number_in(1e-6, 1.0, "deg"), default=0.02,
                   help="largest accepted rms residual (deg)")
    add_detector_options(p)
    p.add_argument("-o", "--output", required=True, help="refined PONI file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Calibrate ``args.frame`` and write the refined PONI; print the geometry.

    The output file is checked writable and every input read and checked (shape,
    dark, mask, saturated pixels) before the refinement starts; the PONI is verified
    on disk after writing.

    Raises
    ------
    OutputError, GeometryError, CorruptFrameError, ShapeMismatchError, ImplausibleInputError
        Unusable inputs or output (named).
    CalibrationError
        Rings not found, a residual too large, rings or peaks that contradict the
        calibrant or the energy.
    """
    from .science.calibration import CalibrationSettings, refine_position

    for path, role in ((args.frame, "frame"), (args.dark, "dark"), (args.mask, "mask")):
        if path:
            require_file(path, role)
    output = check_writable(args.output)
    wavelength_A = args.wavelength_A if args.wavelength_A is not None else HC_KEV_ANGSTROM / args.energy_keV
    guess = replace(read_geometry(args.guess, detector=args.detector, shape=args.shape),
                    wavelength=wavelength_A * 1e-10)
    corrections = read_corrections(guess, dark=args.dark, mask=args.mask, max_count=args.max_count)
    image = read_image(args.frame)
    frame = image.mean()
    corrections.check_frame(image.frames[0][1], image, guess, str(args.frame))
    max_count = corrections.max_count_for(image)
    check_saturation(image.frames[0][1], max_count, str(args.frame))
    bad = invalid_pixels(frame, guess, max_count, corrections.mask, str(args.frame))
    if bad.all():
        raise InvalidFrameError(f"{args.frame}: every pixel is masked or invalid, no ring to find "
                                f"({describe_invalid(image.frames[0][1], max_count)})")
    if corrections.dark is not None:
        frame = frame - corrections.dark
    result = refine_position(np.where(bad, 0.0, frame), guess, args.calibrant, mask=bad, label=str(args.frame),
                             settings=CalibrationSettings(max_residual_deg=args.max_residual_deg))
    result.poni.write(output)
    verify_written(output)
    p = result.poni
    f2 = p.fit2d()
    print(f"refined geometry of {args.frame} ({args.calibrant}, {wavelength_A:.5f} A):")
    print(f"  dist {p.dist * 1e3:.4f} mm  poni1 {p.poni1 * 1e3:.4f} mm  poni2 {p.poni2 * 1e3:.4f} mm")
    print(f"  rot1 {math.degrees(p.rot1):.4f} deg  rot2 {math.degrees(p.rot2):.4f} deg  rot3 {math.degrees(p.rot3):.4f} deg")
    print(f"  beam centre x {f2['centerX']:.2f} px  y {f2['centerY']:.2f} px  direct distance {f2['directDist']:.3f} mm  "
          f"tilt {f2['tilt']:.4f} deg")
    print(f"  residual {result.residual_deg:.5f} deg rms over {result.points} points on {result.rings} rings")
    print(f"written {output}")
    return 0
