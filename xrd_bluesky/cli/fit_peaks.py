"""``xrd-bluesky fit-peaks``: fit peaks in pattern files, print a table, write CSV.

Patterns are text files of columns radial, intensity[, sigma], as ``xrd-bluesky
integrate`` writes them: ``.xye``, ``.xy`` or ``.dat`` with ``#`` comments, Fit2D
``.chi`` (recognised by its four header lines, whatever the suffix), and GSAS-style
files whose header lines are text without ``#``. Each ``--peak LOW:HIGH`` window (in
the file's radial unit, which the table header names when the file says it) is fitted
in every file. The exit status is 1 when any fit failed (the CSV is written all the
same, the failures named in it and in the table), 0 when all succeeded.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import CorruptFrameError, UsageError
from ..outputs import check_writable
from ..science.reduction.integration import UNITS
from ..science.reduction.peak_fitting import BACKGROUNDS, MODELS, PeakResult, fit_peak
from ..store.pattern_files import CHI_LABELS, write_csv

#: Radial unit of a Fit2D ``.chi`` file by its axis label (lower case).
CHI_UNITS = {label.lower(): unit for unit, label in CHI_LABELS.items()}
#: xrd-bluesky's header line naming the radial unit, e.g. ``# radial: 2th_deg (deg)``.
RADIAL_LINE = re.compile(r"#\s*radial:\s*(\S.*?)\s*$")
UNKNOWN_UNIT = "unknown (the file does not say)"
#: The point-count line of a Fit2D chi header.
COUNT_LINE = re.compile(r"\s*[0-9]+\s*")


@dataclass(frozen=True)
class Pattern:
    """A pattern read from a text file.

    ``radial`` (in ``unit``) increases strictly; ``intensity`` and ``sigma`` (1 s.d.,
    None without a third column) are in the file's intensity unit and may hold NaN
    (the fits leave such points out). ``unit`` is the radial unit the file names, e.g.
    ``2th_deg (deg)``, or :data:`UNKNOWN_UNIT`.
    """

    radial: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray | None
    unit: str


def _window(text: str) -> tuple[float, float]:
    """argparse type of ``--peak``: ``LOW:HIGH``, finite, ``LOW < HIGH`` (radial unit of the files)."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a peak window is LOW:HIGH, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise argparse.ArgumentTypeError(f"peak window {text!r} has a non-finite bound: give two finite numbers")
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"peak window {text!r} is empty or reversed")
    return lo, hi


def add_parser(subparsers) -> None:
    """Add the ``fit-peaks`` subcommand."""
    p = subparsers.add_parser("fit-peaks", help="fit peaks in pattern files (.xye/.xy/.dat/.chi), table and CSV")
    p.add_argument("patterns", nargs="+", help="text patterns: radial, intensity[, sigma]; or Fit2D .chi")
    p.add_argument("--peak", type=_window, action="append", required=True,
                   help="window LOW:HIGH in the file's radial unit (repeat per peak)")
    p.add_argument("--model", choices=sorted(MODELS), default="gaussian", help="peak shape")
    p.add_argument("--background", choices=sorted(BACKGROUNDS), default="constant", help="background")
    p.add_argument("-o", "--output", default="peaks.csv", help="CSV file (default: peaks.csv)")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- reading

def _lines(path: str | Path) -> list[str]:
    """The lines of ``path`` as UTF-8 text."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig").splitlines()
    except FileNotFoundError:
        raise CorruptFrameError(f"pattern {path} not found") from None
    except UnicodeDecodeError as exc:
        raise CorruptFrameError(f"pattern {path} cannot be decoded as UTF-8 text: byte {exc.object[exc.start]:#04x} "
                                f"at offset {exc.start} (is it a pattern file?)") from None
    except OSError as exc:
        raise CorruptFrameError(f"cannot read pattern {path}: {exc.strerror or exc}") from exc


def _numbers(line: str) -> list[float] | None:
    """The numbers of a data line (a ``#`` comment ends it), None if it holds other text."""
    try:
        return [float(v) for v in line.split("#", 1)[0].split()]
    except ValueError:
        return None


def _chi_header(lines: list[str]) -> tuple[str, int] | None:
    """Radial unit and declared number of points of a Fit2D chi header (title, axis
    label, ``Intensity``, number of points), or None if ``lines`` do not start so."""
    if len(lines) < 4 or lines[2].strip().lower() != "intensity" or not COUNT_LINE.fullmatch(lines[3]):
        return None
    label = lines[1].strip()
    unit = CHI_UNITS.get(label.lower())
    return (f"{unit} ({UNITS[unit]})" if unit else label or UNKNOWN_UNIT), int(lines[3])


def _rows(path: str | Path, lines: list[str], first: int) -> tuple[list[list[float]], str]:
    """Numeric rows of ``lines[first:]`` and the radial unit of their ``#`` header: leading
    text lines (a GSAS-style header) are skipped, blank and ``#`` lines everywhere."""
    rows: list[list[float]] = []
    unit = UNKNOWN_UNIT
    for number, line in enumerate(lines[first:], start=first + 1):
        text = line.strip()
        if text.startswith("#"):
            found = RADIAL_LINE.match(text)
            unit = found.group(1) if found and not rows else unit
            continue
        values = _numbers(text)
        if values is None and rows:
            raise CorruptFrameError(f"pattern {path} line {number}: {text[:40]!r} is not a row of numbers")
        if values:
            if rows and len(values) != len(rows[0]):
                raise CorruptFrameError(f"pattern {path} line {number} has {len(values)} columns, the rows before "
                                        f"it {len(rows[0])}")
            rows.append(values)
    if not rows:
        raise CorruptFrameError(f"pattern {path} holds no rows of numbers{_first_text(lines[first:])}")
    return rows, unit


def _first_text(lines: list[str]) -> str:
    """``: 'word' is not a number`` for the first word of the first text line, or ``" (it is empty)"``."""
    for line in lines:
        words = line.split("#", 1)[0].split()
        if words:
            return f": {next(w for w in words if _numbers(w) is None)!r} is not a number"
    return " (it is empty)"


def _monotonic(path: str | Path, radial: np.ndarray) -> np.ndarray:
    """Order of the rows that makes ``radial`` increase strictly (reversed if it
    decreases strictly); refuses a non-finite or non-monotonic radial column."""
    bad = np.flatnonzero(~np.isfinite(radial))
    if bad.size:
        raise CorruptFrameError(f"pattern {path}: radial value {radial[bad[0]]} in data row {bad[0] + 1} is not finite")
    step = np.diff(radial)
    if np.all(step > 0):
        return np.arange(radial.size)
    if np.all(step < 0):
        return np.arange(radial.size)[::-1]
    i = int(np.flatnonzero(np.sign(step) != np.sign(step[0]))[0] if step[0] else 0)
    raise CorruptFrameError(f"pattern {path}: the radial column is not strictly monotonic: data row {i + 2} "
                            f"({radial[i + 1]:.6g}) follows {radial[i]:.6g}")


def read_pattern(path: str | Path) -> Pattern:
    """Read a text pattern: radial, intensity and (if a third column exists) sigma.

    Parameters
    ----------
    path : str or Path
        ``.xye``/``.xy``/``.dat`` (``#`` comments, leading text lines skipped) or a
        Fit2D ``.chi`` (recognised by content).

    Returns
    -------
    Pattern
        Rows in increasing radial order; non-finite intensities and sigmas are kept
        (the fits leave such points out).

    Raises
    ------
    CorruptFrameError
        Naming the file (and line): missing, not text, empty, text among the numbers,
        rows of unequal length, fewer than 2 columns or 3 rows, a chi file whose point
        count is not its number of rows, a radial column not finite or not strictly
        monotonic.
    """
    lines = _lines(path)
    chi = _chi_header(lines)
    rows, unit = _rows(path, lines, 4 if chi else 0)
    data = np.array(rows, dtype=np.float64)
    if data.shape[1] < 2 or data.shape[0] < 3:
        raise CorruptFrameError(f"pattern {path} needs at least 2 columns and 3 rows, has shape {data.shape}")
    if chi:
        unit, declared = chi
        if declared != data.shape[0]:
            raise CorruptFrameError(f"chi pattern {path} declares {declared} points but holds {data.shape[0]} rows")
    data = data[_monotonic(path, data[:, 0])]
    return Pattern(data[:, 0], data[:, 1], data[:, 2] if data.shape[1] > 2 else None, unit)


# --------------------------------------------------------------------------- command

def _common_unit(paths: list[str], patterns: list[Pattern]) -> str:
    """The radial unit of the windows: that of the files which name one; refuses files
    that name different units (one window cannot be in both)."""
    named = {p.unit: path for path, p in zip(paths, patterns) if p.unit != UNKNOWN_UNIT}
    if len(named) > 1:
        raise UsageError("the windows cannot be in the radial unit of every file: "
                         + ", ".join(f"{path} is in {unit}" for unit, path in named.items()))
    return next(iter(named), UNKNOWN_UNIT)


def _fit_file(path: str, pattern: Pattern, args: argparse.Namespace) -> list[dict]:
    """Fit every window of ``args.peak`` in ``pattern``; print a table row per fit."""
    rows = []
    for lo, hi in args.peak:
        r = fit_peak(pattern.radial, pattern.intensity, (lo, hi), sigma=pattern.sigma, model=args.model,
                     background=args.background)
        rows.append({"file": str(path), "radial_unit": pattern.unit, "window_low": lo, "window_high": hi,
                     "model": args.model, **asdict(r)})
        status = "ok" if r.success else f"FAILED: {r.reason}"
        print(f"{Path(path).name[:30]:30s} {lo:8.4f}:{hi:<8.4f} {r.centre:12.6f} {r.centre_sigma:9.2g} "
              f"{r.fwhm:9.5f} {r.area:11.5g} {r.reduced_chi2:6.2f}  {status}")
    return rows


#: Columns of the fits' CSV, before the fit's own fields.
CSV_COLUMNS = ("file", "radial_unit", "window_low", "window_high", "model")


def run(args: argparse.Namespace) -> int:
    """Fit every window in every file; print a table and write the CSV.

    Returns
    -------
    int
        0 when every fit succeeded, 1 when any failed (the CSV is written all the same).

    Raises
    ------
    XRDBlueskyError
        Before any fit: the output cannot be written, a pattern cannot be read, the
        files name different radial units.
    """
    output = check_writable(args.output)
    patterns = [read_pattern(path) for path in args.patterns]
    unit = _common_unit(args.patterns, patterns)
    print(f"windows and centres in radial unit: {unit}")
    print(f"{'file':30s} {'window':>17s} {'centre':>12s} {'+-':>9s} {'FWHM':>9s} {'area':>11s} {'chi2r':>6s}  status")
    rows = [row for path, pattern in zip(args.patterns, patterns) for row in _fit_file(path, pattern, args)]
    write_csv(output, [*CSV_COLUMNS, *(f.name for f in fields(PeakResult))], rows)
    failed = [row for row in rows if not row["success"]]
    print(f"written {output}")
    if failed:
        first = failed[0]
        print(f"xrd-bluesky fit-peaks: {len(failed)} of {len(rows)} fits FAILED, e.g. {first['file']} window "
              f"{first['window_low']:g}:{first['window_high']:g}: {first['reason']}", file=sys.stderr)
    return 1 if failed else 0
