"""Output files of the commands: checked writable before any computation and verified
after writing, so that a command never says "written" about a file that is not there."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputError


def check_writable(path: str | Path, *, directory: bool = False) -> Path:
    """Check, before computing anything, that ``path`` can be written.

    Parameters
    ----------
    path : str or Path
        An output file, or (``directory=True``) an output directory, created with its
        parents if missing.
    directory : bool
        Whether ``path`` is a directory.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        Naming the path: a file's folder is missing or not writable, the path is a
        directory where a file is expected (or a file where a directory is), or the
        directory cannot be created.
    """
    path = Path(path)
    if directory:
        if path.exists() and not path.is_dir():
            raise OutputError(f"output directory {path} is an existing file")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output directory {path}: {exc.strerror or exc}") from exc
        folder = path
    else:
        if path.is_dir():
            raise OutputError(f"output file {path} is an existing directory")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise OutputError(f"cannot write {path}: folder {folder} does not exist")
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {path}: the file is not writable")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {folder}: permission denied")
    return path


def verify_written(path: str | Path) -> Path:
    """Raise :class:`OutputError` unless ``path`` exists as a non-empty file (some
    writers, pyFAI's PONI save among them, only log their failures)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise OutputError(f"{path} was not written")
    return path
