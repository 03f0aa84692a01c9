"""Read frames from HDF5 files that a detector may still be writing.

A file is opened the way its writer allows: without a file lock (a reader's lock
would make the detector's next append fail, from another process), with the lock
when this process's writer holds the file locked (HDF5 refuses mismatched flags in
one process), as a SWMR reader when the writer is in SWMR mode; the environment's
``HDF5_USE_FILE_LOCKING`` decides when it is set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other detector filters)
import numpy as np

from ..errors import CorruptFrameError, ShapeMismatchError


@dataclass(frozen=True)
class FrameRef:
    """Where the frames of one event live: an HDF5 dataset and the event's index."""

    path: Path
    dataset: str
    index: int

    def read(self, frames_per_event: int) -> np.ndarray:
        """The event's frames, shape ``(frames_per_event, rows, columns)``.

        Raises
        ------
        CorruptFrameError
            The file cannot be read, is truncated, lacks the dataset, holds fewer
            frames than the event needs or never had them written (unallocated
            storage); the message names the file and dataset.
        ShapeMismatchError
            The dataset is not a stack of 2D frames.
        """
        where = f"{self.path}:{self.dataset}"
        if self.index < 0 or frames_per_event < 1:
            raise CorruptFrameError(f"{where}: event index {self.index} with {frames_per_event} frames per "
                                    "event does not address any frame")
        start, stop = self.index * frames_per_event, (self.index + 1) * frames_per_event
        try:
            with open_hdf5(self.path) as f:
                dset = f.get(self.dataset)
                if not isinstance(dset, h5py.Dataset):
                    raise CorruptFrameError(f"{self.path} has no dataset {self.dataset}")
                if dset.ndim != 3:
                    raise ShapeMismatchError(f"{where} has shape {dset.shape}; expected a stack of frames (3D)")
                if dset.shape[0] < stop:
                    raise CorruptFrameError(f"{where} holds {dset.shape[0]} frames, "
                                            f"event {self.index} needs frames {start}-{stop - 1}")
                missing = _unwritten(dset, start, stop)
                if missing:
                    raise CorruptFrameError(f"{where}: frames {missing} were never written (no storage allocated)")
                return np.asarray(dset[start:stop])
        except (CorruptFrameError, ShapeMismatchError):
            raise
        except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... on bad files
            raise CorruptFrameError(f"cannot read frames from {where}: {type(exc).__name__}: {exc}") from exc


def _unwritten(dset: h5py.Dataset, start: int, stop: int) -> list[int]:
    """Frames ``start..stop-1`` of ``dset`` whose storage HDF5 never allocated: a file
    closed before the detector wrote them reads back as the fill value, not as data."""
    if dset.chunks is None:
        return [] if dset.id.get_offset() is not None or dset.id.get_storage_size() else list(range(start, stop))
    per_chunk = dset.chunks[0]
    return [i for i in range(start, stop)
            if dset.id.get_chunk_info_by_coord((i - i % per_chunk, 0, 0)).byte_offset is None]


def path_from_uri(uri: str) -> Path:
    """Local path of a ``file://[host]/path`` URI."""
    if not isinstance(uri, str):
        raise CorruptFrameError(f"frame URI {uri!r} is not text")
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise CorruptFrameError(f"frame URI {uri!r} is not a local file")
    return Path(unquote(parsed.path))


def _open_modes() -> list[dict]:
    """h5py ``File`` keywords to try, in order (see the module docstring)."""
    if os.environ.get("HDF5_USE_FILE_LOCKING"):
        return [{}, {"swmr": True}]
    # a writer in this process fixes the flags: HDF5's default, or best-effort locking
    same_process = [{}, {"locking": "best-effort"}, {"locking": True}]
    plain = [{"locking": False}, *same_process]
    return [*plain, *({**mode, "swmr": True} for mode in plain)]


@contextlib.contextmanager
def open_hdf5(path: Path) -> Iterator[h5py.File]:
    """Open ``path`` read-only as its writer allows (see the module docstring); the
    first mode's error is raised when none works."""
    first: Exception | None = None
    for mode in _open_modes():
        try:
            f = h5py.File(path, "r", **mode)
        except (OSError, ValueError) as exc:
            first = first or exc
            continue
        with f:
            yield f
        return
    raise first
