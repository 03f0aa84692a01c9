"""The durable on-disk spool of Bluesky documents: one JSON line per document, one file
per run (``<spool dir>/<container>/<run uid>.jsonl``).

A line is ``{"name": ..., "doc": ...}``; numpy arrays are stored with their dtype and
shape (base64 of the raw bytes), so a document read back is bit-for-bit the one
written. A spool file that a live writer still holds is locked (``flock``); the lock
goes away with the process, however it ends.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import XRDBlueskyError
from ..paths import safe_child
from ..schema.documents import check_uid

SUFFIX = ".jsonl"
_ARRAY = "__ndarray__"


class SpoolError(XRDBlueskyError, OSError):
    """The spool cannot be written or a spool file is not valid."""


def _default(value):
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {_ARRAY: {"dtype": array.dtype.str, "shape": list(array.shape),
                         "data": base64.b64encode(array.tobytes()).decode("ascii")}}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _object_hook(obj: dict):
    spec = obj.get(_ARRAY) if len(obj) == 1 else None
    if spec is None:
        return obj
    return np.frombuffer(base64.b64decode(spec["data"]), dtype=np.dtype(spec["dtype"])).reshape(spec["shape"]).copy()


def encode(name: str, doc: dict) -> bytes:
    """One spool line (UTF-8 JSON and a newline) for document ``(name, doc)``."""
    return json.dumps({"name": name, "doc": doc}, default=_default, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> tuple[str, dict]:
    """``(name, doc)`` of one spool line; ValueError if it is not one."""
    record = json.loads(line, object_hook=_object_hook)
    if (not isinstance(record, dict) or not isinstance(record.get("name"), str)
            or not isinstance(record.get("doc"), dict)):
        raise ValueError("not a {'name', 'doc'} record")
    return record["name"], record["doc"]


def spool_file(directory: Path, run_uid: str) -> Path:
    """The spool file of run ``run_uid`` in ``directory``.

    Raises
    ------
    MissingMetadataError
        ``run_uid`` would put the file elsewhere (:func:`~xrd_bluesky.paths.safe_child`)
        or is not a run uid (:func:`~xrd_bluesky.schema.documents.check_uid`, an
        ``UnsafeUidError``): the message names it.
    """
    path = safe_child(directory, f"{run_uid}{SUFFIX}")
    check_uid(run_uid, f"run uid of a spool file in {directory}")
    return path


def read_spool(path: Path) -> Iterator[tuple[str, dict]]:
    """The documents of a spool file, in order.

    Raises
    ------
    SpoolError
        A line is not a valid document: the message names the file and the line.
    """
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                yield decode(line)
            except ValueError as exc:
                raise SpoolError(f"{path} line {number} is not a valid document: {exc}") from exc


def append(path: Path, line: bytes) -> None:
    """Append one line to a spool file that no writer holds (used by ``sync``)."""
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


class OpenSpool:
    """A run's spool file, open for appending and locked while the run is live.

    :meth:`write` never waits for a :meth:`sync` in progress (an fsync can take a
    second while a detector streams to the same disk); :meth:`close` does.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot record raw data: cannot open spool file {path}: {exc}") from exc
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.dirty = False
        self._sync_lock = threading.Lock()  # held by sync and close, not by write

    def write(self, line: bytes) -> None:
        """Append ``line`` in one ``write`` call: the kernel has it once this returns, so
        killing the process cannot lose or tear it (only a machine crash before the
        next :meth:`sync` can)."""
        try:
            written = os.write(self.fd, line)
        except OSError as exc:
            raise SpoolError(f"cannot record raw data: writing spool file {self.path} failed: {exc}") from exc
        if written != len(line):
            raise SpoolError(f"cannot record raw data: short write to spool file {self.path} "
                             f"({written} of {len(line)} bytes)")
        self.dirty = True

    def sync(self) -> None:
        """fsync what was written since the last call (writes meanwhile go on)."""
        with self._sync_lock:
            self._sync()

    def _sync(self) -> None:
        # a write sets ``dirty`` after its data are in the kernel: a write that set it
        # before it is cleared here is covered by this fsync, a later one by the next
        if self.dirty and self.fd >= 0:
            self.dirty = False
            os.fsync(self.fd)

    def close(self) -> None:
        """fsync, unlock and close (once)."""
        with self._sync_lock:
            if self.fd >= 0:
                self._sync()
                os.close(self.fd)
                self.fd = -1


def is_locked(path: Path) -> bool:
    """Whether a live writer holds ``path`` (its run is still being recorded)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
