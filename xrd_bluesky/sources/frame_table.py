"""Per-file tables of the ``integrate`` command: a CSV whose ``file`` column names image
files (relative to the CSV's folder, or absolute) and whose other columns give a value
per file, e.g. the geometry of each frame file::

    file,poni
    pos0.tif,pos0.poni
    pos1.tif,pos1.poni

or its monitors, exposure and sample thickness::

    file,i0,it,exposure_s,thickness_mm
    sample.tif,1.2e6,3.1e5,1.0,1.5
    water.tif,1.1e6,4.0e5,1.0,1.0

Every listed file must exist; a row's numbers must be finite and > 0.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..errors import MissingMetadataError, MonitorError, UsageError
from ..frames.reader import require_file
from .positions_csv import FILE_COLUMN


def read_table(path: str | Path, what: str, *, required: tuple[str, ...] = (),
               known: tuple[str, ...] = ()) -> dict[Path, tuple[int, dict[str, str]]]:
    """The rows of a per-file CSV, by resolved file path, with their line numbers.

    Parameters
    ----------
    path : str or Path
        The CSV.
    what : str
        What the table is (``"monitors CSV"``), for messages.
    required : tuple of str
        Columns it must have besides ``file``.
    known : tuple of str
        Columns it may have; others are refused (a misspelt column would be ignored).

    Raises
    ------
    UsageError
        The CSV is missing, unreadable or empty, lists no file, or lists a file twice.
    MissingMetadataError
        No ``file`` column, a required column missing or an unknown one (the columns
        are named), or a row without a file.
    CorruptFrameError
        A listed file does not exist (its line named).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            names = [name.strip() for name in next(reader, [])]
            rows = [(reader.line_num, dict(zip(names, (cell.strip() for cell in cells))))
                    for cells in reader if any(cell.strip() for cell in cells)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}") from exc
    missing = [c for c in (FILE_COLUMN, *required) if c not in names]
    unknown = [c for c in names if c not in (FILE_COLUMN, *required, *known)]
    if missing or unknown:
        raise MissingMetadataError(f"{what} {path} has the columns {names}: " + "; ".join(
            [f"missing {missing}"] * bool(missing) + [f"unknown {unknown}"] * bool(unknown))
            + f" (columns: {[FILE_COLUMN, *required, *known]})")
    if not rows:
        raise UsageError(f"{what} {path} lists no file")
    table: dict[Path, tuple[int, dict[str, str]]] = {}
    for line, row in rows:
        if not row.get(FILE_COLUMN):
            raise MissingMetadataError(f"{what} {path} line {line}: no file in column {FILE_COLUMN!r}")
        file = require_file(path.parent / row[FILE_COLUMN], f"{what} {path} line {line}:")
        key = file.resolve()
        if key in table:
            raise UsageError(f"{what} {path} line {line}: {row[FILE_COLUMN]} is listed again (first on line "
                             f"{table[key][0]})")
        table[key] = (line, row)
    return table


def positive_cell(row: dict[str, str], column: str, unit: str, where: str) -> float | None:
    """The number in ``column`` of ``row`` (None if blank or absent), or
    :class:`MonitorError` naming ``where``, the column and the text unless it is a
    finite number > 0."""
    text = row.get(column, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise MonitorError(f"{where}: {column} = {text!r} {unit} is not a finite number > 0")
    return value
