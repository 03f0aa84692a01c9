"""``xrd-bluesky gain-map``: gain map from amorphous-scatterer frames at several detector
positions, one glob of frames and one PONI per position."""

from __future__ import annotations

import argparse
import gc
import glob
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptFrameError, UsageError
from ..frames.reader import read_image
from ..outputs import check_writable, verify_written
from ..science.geometry import Poni
from ..science.reduction.input_checks import (
    check_dark,
    check_exposures,
    check_mask,
    check_saturation,
)
from ..science.reduction.integration import check_frame_shape, invalid_pixels
from ..sources.file_inputs import read_geometry, read_one, saturation_level
from .options import add_detector_options


def add_parser(subparsers) -> None:
    """Add the ``gain-map`` subcommand."""
    p = subparsers.add_parser("gain-map", help="gain map from amorphous-scatterer frames at several positions")
    p.add_argument("--frames", action="append", required=True, help="glob of one position's frames (repeat)")
    p.add_argument("--poni", action="append", required=True, help="PONI file of that position (repeat)")
    p.add_argument("--mask", action="append", help="mask image of that position, non-zero = bad "
                   "(beamstop shadow...); repeat once per --frames")
    p.add_argument("--dark", help="glob of dark frames of the same exposure")
    add_detector_options(p)
    p.add_argument("-o", "--output", required=True, help="output image, .tif or .edf (float32)")
    p.add_argument("--form", choices=["gain", "inverse"], default="gain", help="write gain or 1/gain")
    p.set_defaults(func=run)


@dataclass
class FrameSeries:
    """Sum (counts, float64), minimum and maximum (counts, in the frames' type) of a
    series of frames, accumulated one file at a time (memory: three frames, whatever the
    number of files), the exposure time of its files (s) and the saturation level of its
    integer type."""

    label: str
    total: np.ndarray
    low: np.ndarray
    high: np.ndarray
    count: int
    exposure_s: float | None
    max_count: float | None

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    def add(self, frame: np.ndarray) -> None:
        """Accumulate one more frame (without a float64 copy of it)."""
        if frame.dtype != self.low.dtype:  # files of another type: min and max in a type holding both
            dtype = np.result_type(self.low, frame)
            self.low, self.high = self.low.astype(dtype), self.high.astype(dtype)
        np.add(self.total, frame, out=self.total)
        np.minimum(self.low, frame, out=self.low)
        np.maximum(self.high, frame, out=self.high)
        self.count += 1


def matching_files(pattern: str, role: str) -> list[str]:
    """The files matching ``pattern``, sorted, or :class:`CorruptFrameError`."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise CorruptFrameError(f"no {role} files match {pattern!r}")
    return files


def read_series(pattern: str, role: str, poni: Poni, max_count: float | None) -> FrameSeries:
    """Read every frame of the files matching ``pattern``, checked against the detector.

    Raises
    ------
    CorruptFrameError
        No file matches, or a file is unreadable (named).
    ShapeMismatchError
        A frame does not fit the detector (named).
    """
    series = None
    for name in matching_files(pattern, role):
        image = read_image(name, role)
        for frame_name, frame in image.frames:
            check_frame_shape(frame, poni, f"{role} {frame_name} of {name}")
            frame = np.asarray(frame)
            if series is None:
                series = FrameSeries(pattern, np.zeros(frame.shape), frame.copy(), frame.copy(), 0, image.exposure_s,
                                     saturation_level(image, max_count))
            series.add(frame)
    return series


def read_ponis(paths: list[str], detector: str | None, shape: tuple[int, int] | None) -> list[Poni]:
    """The geometries of the PONI files ``paths`` (:func:`read_geometry`).

    pyFAI runs a full garbage collection for every PONI file it loads (about 0.3 s of CPU
    per file in a process holding this package's imports): the objects alive before the
    reading are frozen out of those collections (:func:`gc.freeze`), which then visit
    only what the reading creates.
    """
    gc.freeze()
    try:
        return [read_geometry(p, detector=detector, shape=shape) for p in paths]
    finally:
        gc.unfreeze()


def run(args: argparse.Namespace) -> int:
    """Compute the gain map of ``args`` (see :func:`add_parser`), write it and print its
    statistics.

    Raises
    ------
    UsageError
        Not one PONI (and mask, if any) per ``--frames``.
    OutputError, GeometryError, CorruptFrameError, ShapeMismatchError, ImplausibleInputError
        Unusable inputs or output (named).
    GainMapError
        Positions that contradict their geometry or each other.
    """
    from ..science.gain_map.method import PositionData, compute_gain_map

    if len(args.frames) != len(args.poni) or (args.mask and len(args.mask) != len(args.frames)):
        raise UsageError("give one --poni (and, if any, one --mask) per --frames")
    for pattern in args.frames:
        matching_files(pattern, "frame")
    if args.dark:
        matching_files(args.dark, "dark")
    output = check_writable(args.output)
    if not str(output).lower().endswith((".tif", ".tiff", ".edf")):
        raise UsageError(f"output {output}: write a .tif or an .edf image")
    ponis = read_ponis(args.poni, args.detector, args.shape)
    masks = [read_one(m, "mask", poni)[0] != 0 for m, poni in zip(args.mask, ponis)] if args.mask else None
    for m, name in zip(masks or [], args.mask or []):
        check_mask(m, f"mask {name}")
    dark = read_series(args.dark, "dark", ponis[0], args.max_count) if args.dark else None
    positions = []
    for i, (pattern, poni_file, poni) in enumerate(zip(args.frames, args.poni, ponis)):
        series = read_series(pattern, "frame", poni, args.max_count)
        label = f"position {i} ({pattern}, {poni_file})"
        static = masks[i] if masks else None
        invalid = invalid_pixels(series.low, poni, None, static, label)
        if series.max_count is not None:
            invalid |= series.high >= series.max_count
            check_saturation(series.high, series.max_count, label)
        mean = series.mean
        if dark is not None:
            check_exposures(dark.exposure_s, series.exposure_s, f"dark {args.dark}", label)
            check_dark(dark.mean, mean, invalid, None, f"dark {args.dark}", label)
            mean = mean - dark.mean
        positions.append(PositionData(label, mean, series.count, poni, invalid))
    result = compute_gain_map(positions, dark_rate=dark.mean if dark is not None else None)
    result.export(output, form=args.form, metadata={"frames": " ".join(args.frames), "poni": " ".join(args.poni)})
    verify_written(output)
    for key, value in result.statistics.items():
        print(f"{key}: {value}")
    print(f"written {output} ({args.form})")
    return 0
