"""Positions CSV: at which motor position each frame file was taken.

The file is comma-separated with a header row. Its ``file`` column names the frame
files, relative to the CSV's folder (or absolute); every other column holds the
positions of one motor, a finite number per row, e.g.::

    file,tth_deg
    lab6_00.tif,0
    lab6_01.tif,15.0

A command reads one named motor column (:func:`read_positions`) and takes either every
listed frame, in the CSV's order, or the frames given on its command line, each of
which the CSV must list (:func:`frame_positions`): rows the command line leaves out are
not used, so that a bad frame can be left out without editing the CSV.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from ..errors import MissingMetadataError, UsageError
from ..frames.reader import require_file

#: Name of the column of frame files.
FILE_COLUMN = "file"


def _rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The stripped column names of the CSV ``path`` and its non-blank rows with their
    line numbers."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise UsageError(f"positions CSV {path} is empty; its first line names the columns, e.g. "
                                 f"{FILE_COLUMN},tth_deg")
            names = [name.strip() for name in header]
            rows = [(reader.line_num, dict(zip(names, (cell.strip() for cell in cells))))
                    for cells in reader if any(cell.strip() for cell in cells)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read positions CSV {path}: {type(exc).__name__}: {exc}") from exc
    return names, rows


def read_positions(path: str | Path, column: str) -> list[tuple[Path, float]]:
    """The frame files of a positions CSV with their positions in ``column``.

    Parameters
    ----------
    path : str or Path
        Positions CSV (see the module's description).
    column : str
        Header of the motor column to read, e.g. ``"tth_deg"``.

    Returns
    -------
    list of (Path, float)
        ``(frame file, position)`` in the CSV's order; a relative file is taken
        relative to the CSV's folder.

    Raises
    ------
    UsageError
        The CSV is missing, unreadable, empty, lists no frame or lists one file twice
        (both rows named).
    MissingMetadataError
        No ``file`` column or no ``column`` (the columns the CSV has are named), or a
        row whose file is blank or whose position is not a finite number (the row is
        named).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"positions CSV not found: {path}" + (" (a directory)" if path.is_dir() else ""))
    names, rows = _rows(path)
    for wanted in (FILE_COLUMN, column):
        if wanted not in names:
            raise MissingMetadataError(f"positions CSV {path} has no column {wanted!r}; its columns are "
                                       f"{', '.join(repr(n) for n in names)}")
    if not rows:
        raise UsageError(f"positions CSV {path} lists no frame")
    positions: list[tuple[Path, float]] = []
    seen: dict[Path, int] = {}
    for line, row in rows:
        where = f"positions CSV {path} line {line}"
        name, text = row.get(FILE_COLUMN, ""), row.get(column, "")
        if not name:
            raise MissingMetadataError(f"{where}: no file in column {FILE_COLUMN!r}")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise MissingMetadataError(f"{where}: {column} = {text!r} for {name} is not a finite number")
        frame = path.parent / name
        key = frame.resolve()
        if key in seen:
            raise UsageError(f"{where}: {name} is listed again (first on line {seen[key]}); give each frame once")
        seen[key] = line
        positions.append((frame, value))
    return positions


def frame_positions(path: str | Path, column: str, frames: Sequence[str | Path] = ()) -> list[tuple[Path, float]]:
    """The frames a command works on, with their positions from a positions CSV.

    Parameters
    ----------
    path : str or Path
        Positions CSV.
    column : str
        Its motor column.
    frames : sequence of str or Path
        Frame files given on the command line (relative to the working directory);
        empty: every frame the CSV lists.

    Returns
    -------
    list of (Path, float)
        ``(frame file, position)``: the CSV's rows in its order when ``frames`` is
        empty, else ``frames`` in their order, each with its row's position.

    Raises
    ------
    UsageError, MissingMetadataError
        See :func:`read_positions`; also a frame of ``frames`` that the CSV does not
        list, or one given twice (named).
    CorruptFrameError
        A frame file that does not exist or is a directory (named with its CSV line).
    """
    listed = read_positions(path, column)
    if frames:
        by_file = {frame.resolve(): value for frame, value in listed}
        given = [Path(f) for f in frames]
        resolved = [f.resolve() for f in given]
        twice = sorted({str(f) for f, r in zip(given, resolved) if resolved.count(r) > 1})
        if twice:
            raise UsageError(f"frame {', '.join(twice)} is given more than once")
        unlisted = [str(f) for f, r in zip(given, resolved) if r not in by_file]
        if unlisted:
            raise UsageError(f"positions CSV {path} lists no row for {', '.join(unlisted)} (column {FILE_COLUMN!r}, "
                             "relative to the CSV's folder); give only frames it lists, or none for all of them")
        listed = [(f, by_file[r]) for f, r in zip(given, resolved)]
    for frame, _ in listed:
        require_file(frame, f"positions CSV {path}: frame")
    return listed
