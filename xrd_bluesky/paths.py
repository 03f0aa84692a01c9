"""File names built from metadata (run uids, sample names) that cannot leave their
directory."""

from __future__ import annotations

from pathlib import Path

from .errors import UnsafePathError


def safe_child(directory: str | Path, name: str) -> Path:
    """``directory / name`` for a ``name`` taken from metadata, refusing anything that
    would land elsewhere.

    Parameters
    ----------
    directory : path
        The directory the file must stay in.
    name : str
        One path component from metadata (a uid, a sample name, with a suffix).

    Raises
    ------
    UnsafePathError
        ``name`` is empty, holds a NUL byte or a path separator, is ``.`` or ``..``,
        or is absolute: the message names it.
    """
    if not isinstance(name, str) or not name or "\x00" in name or name in (".", "..") \
            or "/" in name or "\\" in name or Path(name).is_absolute():
        raise UnsafePathError(f"refusing file name {name!r} from metadata: it must be one plain "
                                   f"path component inside {directory}")
    path = Path(directory) / name
    if path.resolve().parent != Path(directory).resolve():
        raise UnsafePathError(f"refusing file name {name!r}: it resolves outside {directory}")
    return path

