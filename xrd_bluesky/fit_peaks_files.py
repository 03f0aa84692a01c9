"""``xrd-bluesky fit-peaks``: fit peaks in pattern files, print a table, write CSV.

Patterns are text files of columns radial, intensity[, sigma] (``.xye``, ``.xy``,
``.dat``; ``#`` comments), as ``xrd-bluesky integrate`` writes them. Each ``--peak
LOW:HIGH`` window (in the file's radial unit) is fitted in every file.
"""

from __future__ import annotations

import argparse
import csv
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from .errors import CorruptFrameError
from .science.peak_fitting import BACKGROUNDS, MODELS, PeakResult, fit_peak


def _window(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a peak window is LOW:HIGH, got {text!r}") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"peak window {text!r} is empty or reversed")
    return lo, hi


def add_parser(subparsers) -> None:
    """Add the ``fit-peaks`` subcommand."""
    p = subparsers.add_parser("fit-peaks", help="fit peaks in pattern files (.xye/.xy), table and CSV")
    p.add_argument("patterns", nargs="+", help="text patterns: radial, intensity[, sigma]")
    p.add_argument("--peak", type=_window, action="append", required=True,
                   help="window LOW:HIGH in the file's radial unit (repeat per peak)")
    p.add_argument("--model", choices=sorted(MODELS), default="gaussian", help="peak shape")
    p.add_argument("--background", choices=sorted(BACKGROUNDS), default="constant", help="background")
    p.add_argument("-o", "--output", default="peaks.csv", help="CSV file (default: peaks.csv)")
    p.set_defaults(func=run)


def read_pattern(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Radial, intensity and (if a third column exists) sigma of a text pattern.

    Non-finite values are kept: the fits leave such points out.

    Raises
    ------
    CorruptFrameError
        Naming the file: missing, unreadable, not numeric text, rows of unequal length,
        or fewer than 2 columns or 3 rows.
    """
    try:
        with warnings.catch_warnings():  # an empty file is reported below, by name
            warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)
            data = np.loadtxt(path, comments="#", ndmin=2)
    except (OSError, ValueError) as exc:
        raise CorruptFrameError(f"cannot read pattern {path}: {exc}") from exc
    if data.shape[1] < 2 or data.shape[0] < 3:
        raise CorruptFrameError(f"pattern {path} needs at least 2 columns and 3 rows, has shape {data.shape}")
    return data[:, 0], data[:, 1], data[:, 2] if data.shape[1] > 2 else None


def run(args: argparse.Namespace) -> int:
    """Fit every window in every file; print a table and write the CSV."""
    names = [f.name for f in fields(PeakResult)]
    rows = []
    print(f"{'file':30s} {'window':>17s} {'centre':>12s} {'+-':>9s} {'FWHM':>9s} {'area':>11s} {'chi2r':>6s}  status")
    for path in args.patterns:
        x, y, sigma = read_pattern(path)
        for lo, hi in args.peak:
            r = fit_peak(x, y, (lo, hi), sigma=sigma, model=args.model, background=args.background)
            rows.append({"file": str(path), "window_low": lo, "window_high": hi, "model": args.model, **asdict(r)})
            status = "ok" if r.success else f"FAILED: {r.reason}"
            print(f"{Path(path).name[:30]:30s} {lo:8.4f}:{hi:<8.4f} {r.centre:12.6f} {r.centre_sigma:9.2g} "
                  f"{r.fwhm:9.5f} {r.area:11.5g} {r.reduced_chi2:6.2f}  {status}")
    with open(args.output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "window_low", "window_high", "model", *names])
        writer.writeheader()
        writer.writerows(rows)
    print(f"written {args.output}")
    return 0
