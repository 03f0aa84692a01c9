"""Arrays prepared once per geometry, kept in a directory shared by the processes of a machine.

Building the pixel-splitting matrix of one geometry takes one to two seconds of CPU for a
Pilatus 2M, the beamstop's shadow and the radial range the pixels cover a second more,
and every process integrating that geometry needs them: the Dask workers replaying runs
of one calibration each computed all of them from scratch. A :class:`PreparationStore`
keeps each preparation as one file (an uncompressed ``.npz``, whose members carry a
CRC-32), named by a digest of everything it depends on. A process that needs one loads
it from there, or *claims* it (an exclusively created ``.claim`` file naming host,
process and time), computes it and saves it, while the others wait for it or compute
another one meanwhile: each is computed once between them
(:mod:`~xrd_bluesky.science.reduction.shared_preparations`).

Nothing wrong is ever loaded silently: a file whose CRC, members or recorded key do not
match is reported, removed and computed again; a claim whose process has died (on this
host) or that is older than :data:`CLAIM_TIMEOUT_S` is taken over. The directory is
bounded in bytes: the files used least recently are removed first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyFAI

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Version of the file layout; part of every name, so that a change never reads old files.
FORMAT = 1
#: Default bound (bytes) of a store's directory: about 45 Pilatus 2M matrices (45 MB each;
#: a shadow or a coverage is small beside one).
DEFAULT_MAX_BYTES = 2 * 2**30
#: Age (s) after which another process's claim is taken over, wherever it runs.
CLAIM_TIMEOUT_S = 600.0
#: Age (s) after which a claim file still without its owner is taken over.
WRITE_GRACE_S = 10.0
#: The member of each file holding the key it was saved under.
KEY_MEMBER = "key"


class PreparationStore:
    """Prepared arrays in ``directory``, by key (see the module).

    Parameters
    ----------
    directory : path
        Where the files go (created if missing).
    max_bytes : int
        Bound of the directory's files (bytes); after each save the least recently
        used files are removed until they fit.
    """

    def __init__(self, directory: str | Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)

    def path(self, key: tuple) -> Path:
        """The file of ``key`` (whether it exists or not)."""
        return self.directory / f"{_digest(_text(key))}.npz"

    def load(self, key: tuple, convert: Callable[[dict[str, np.ndarray]], T]) -> T | None:
        """``convert`` of the arrays saved under ``key``, or None when there are none or
        the file is damaged: unreadable, saved under another key, or arrays that
        ``convert`` refuses (ValueError); it is then logged and removed, so that it is
        computed again."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            return self._discard(path, f"it cannot be read ({type(exc).__name__}: {exc})")
        if str(arrays.pop(KEY_MEMBER, "")) != _text(key):
            return self._discard(path, "it was saved under another key")
        try:
            value = convert(arrays)
        except ValueError as exc:
            return self._discard(path, str(exc))
        os.utime(path)  # used now: removed last
        return value

    def save(self, key: tuple, arrays: dict[str, np.ndarray]) -> None:
        """Save ``arrays`` under ``key`` (atomically: readers see the whole file or
        none), then remove the least recently used files beyond :attr:`max_bytes`. A
        disk that refuses the file is logged, not raised: the arrays are in memory."""
        path = self.path(key)
        partial = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.partial")
        try:
            with open(partial, "wb") as f:
                np.savez(f, **arrays, **{KEY_MEMBER: np.array(_text(key))})
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            logger.warning("prepared arrays not kept in %s: %s", self.directory, exc)
            return
        self._evict(keep=path)

    def claim(self, key: tuple) -> bool:
        """Whether this process now holds the claim to compute ``key`` (then it must
        :meth:`release` it); False while another live process holds it. A claim of a
        dead process or older than :data:`CLAIM_TIMEOUT_S` is taken over."""
        claim = self.path(key).with_suffix(".claim")
        for _ in range(2):
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not _stale(claim):
                    return False
                logger.warning("taking over the stale claim %s (%s)", claim, _read(claim))
                claim.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()} {time.time():.3f}")
            return True
        return False

    def release(self, key: tuple) -> None:
        """Give up this process's claim of ``key`` (computed or not)."""
        self.path(key).with_suffix(".claim").unlink(missing_ok=True)

    def _discard(self, path: Path, why: str) -> None:
        logger.warning("prepared file %s is not used and is removed: %s; it is computed again", path, why)
        path.unlink(missing_ok=True)

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used files until the directory fits the bound."""
        files = []
        for path in self.directory.glob("*.npz"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def _text(key: tuple) -> str:
    """What a file depends on, as text: the layout, pyFAI's version and the key."""
    return repr((FORMAT, pyFAI.version, key))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return "unreadable"


def _stale(claim: Path) -> bool:
    """Whether a claim file belongs to a process of this host that has ended, or is
    older than :data:`CLAIM_TIMEOUT_S`; a claim that vanished meanwhile is stale."""
    try:
        age = time.time() - claim.stat().st_mtime
        text = claim.read_text()
    except OSError:  # gone meanwhile
        return not claim.exists()
    try:
        host, pid, _ = text.split()
    except ValueError:  # being written this instant, or left empty by a process that died then
        return age > WRITE_GRACE_S
    if age > CLAIM_TIMEOUT_S:
        return True
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):  # alive under another user; a garbled pid
        return False
    return False
