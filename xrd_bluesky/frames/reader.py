"""The one frame reader: every detector frame read from a file is read here, whether a
document refers to it or a command names its file.

- :class:`FrameRef`: the frames of one event in an HDF5 dataset that a StreamResource
  announces (ophyd-async, this package's simulator), possibly still being written;
- :func:`read_datum_frames`: the frames of a Datum (ophyd v1 area detectors), through
  the resource's handler (``area-detector-handlers``), opened for each read and closed
  after it (a reader that keeps a detector's file open makes the IOC's next write fail);
- :func:`read_image`: every frame of an image file (TIFF, EDF, CBF, MAR... through
  fabio; HDF5/NeXus and Eiger masters through h5py), as the file commands, darks,
  masks and gain maps take them.

Every read is checked and every failure is a :class:`~xrd_bluesky.errors.CorruptFrameError`
naming the file (and dataset, datum or link): a missing file or a directory, a
truncated TIFF strip or CBF binary section, a file that fabio reports broken only in
its log, an HDF5 file without frames or whose frames were never written, an Eiger
master whose data file is missing, a handler that raises, and a reader that does not
return within :data:`READ_TIMEOUT_S` (fabio loops on some cut CBF headers). The format
specifics are in :mod:`.hdf5` and :mod:`.fabio_formats`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import CorruptFrameError, ResourceLimitError, ShapeMismatchError, XRDBlueskyError
from ..timeouts import call_with_timeout
from .chunk_codecs import read_stack
from .fabio_formats import check_complete, fabio_errors, header_values
from .hdf5 import HDF5_SUFFIXES, frame_datasets, hdf5_header, open_hdf5, unwritten_frames

#: Longest a file read may take (s); a 2M-pixel frame reads in well under a second.
READ_TIMEOUT_S = 30.0


@contextmanager
def _foreign_errors(message: str) -> Iterator[None]:
    """Turn what a third-party reader raises in the block (h5py, fabio and the handlers
    raise OSError, KeyError, RuntimeError... on bad files) into a
    :class:`CorruptFrameError` that starts with ``message``; domain errors pass."""
    try:
        yield
    except XRDBlueskyError:
        raise
    except Exception as exc:
        raise CorruptFrameError(f"{message}: {type(exc).__name__}: {exc}") from exc


def _check_written(where: str, dset: h5py.Dataset, start: int, stop: int) -> None:
    """Refuse frames ``start..stop-1`` of ``dset`` (at ``where``) when the writer never
    wrote some of them (HDF5 would read the fill value)."""
    missing = unwritten_frames(dset, start, stop)
    if missing:
        raise CorruptFrameError(f"{where}: frames {missing} were never written (no storage allocated)")


# -- frames of documents -----------------------------------------------------------
@dataclass(frozen=True)
class FrameRef:
    """Where the frames of one event live: an HDF5 dataset and the event's index."""

    path: Path
    dataset: str
    index: int

    def read(self, frames_per_event: int) -> np.ndarray:
        """The event's frames, shape ``(frames_per_event, rows, columns)``, from a file
        the detector may still be writing (:func:`~.hdf5.open_hdf5`).

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
        with _foreign_errors(f"cannot read frames from {where}"), open_hdf5(self.path) as f:
            dset = f.get(self.dataset)
            if not isinstance(dset, h5py.Dataset):
                raise CorruptFrameError(f"{self.path} has no dataset {self.dataset}")
            if dset.ndim != 3:
                raise ShapeMismatchError(f"{where} has shape {dset.shape}; expected a stack of frames (3D)")
            if dset.shape[0] < stop:
                raise CorruptFrameError(f"{where} holds {dset.shape[0]} frames, "
                                        f"event {self.index} needs frames {start}-{stop - 1}")
            _check_written(where, dset, start, stop)
            return read_stack(dset, start, stop, where)


def read_datum_frames(handler_class: type, path: Path, resource_kwargs: Mapping, datum_kwargs: Mapping, *,
                      spec: str, resource_uid: str, datum_id: str) -> np.ndarray:
    """The frames of one Datum, shape ``(frames, rows, columns)``, read by a new
    ``handler_class(path, **resource_kwargs)`` called with ``datum_kwargs`` and closed
    after it.

    Parameters
    ----------
    handler_class : type
        The area-detector-handlers class of the resource's ``spec``.
    path : Path
        The resource's file.
    resource_kwargs, datum_kwargs : mapping
        The Resource's and the Datum's keywords.
    spec, resource_uid, datum_id : str
        The resource's spec and uid and the datum's id, for messages.

    Raises
    ------
    CorruptFrameError
        The handler cannot open the file or read the frames, or gives no stack of
        frames (file, spec, resource and datum named).
    """
    with _foreign_errors(f"cannot open {path} ({spec}) of resource {resource_uid}"):  # handlers open in __init__
        handler = handler_class(str(path), **resource_kwargs)
    where = f"{path} (datum {datum_id}, {dict(datum_kwargs)})"
    try:
        with _foreign_errors(f"cannot read frames from {where}"):
            frames = np.asarray(handler(**datum_kwargs))
    finally:
        _close(handler)
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise CorruptFrameError(f"{where} gave an array of shape {frames.shape}, not a stack of frames")
    return frames


def _close(handler: object) -> None:
    """Close a handler's files (a handler that fails to close must not hide the frames)."""
    close = getattr(handler, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # handlers' close() raises on files already closed, among others
            pass


# -- image files -------------------------------------------------------------------
@dataclass(frozen=True)
class ImageFile:
    """The frames of one file, each with the name its outputs take, and its header.

    Attributes
    ----------
    path : Path
        The file.
    frames : list of (str, ndarray)
        ``(name, frame)`` pairs in counts as stored. A single frame is named by the
        file's stem, the frames of a stack ``<stem>_00000``, ``<stem>_00001``...
    exposure_s : float or None
        Exposure time per frame (s) from the header, when it says.
    count_cutoff : float or None
        Counts above which the detector's header says a pixel is unreliable.
    header : dict
        The raw header (fabio's); for HDF5, the values of
        :data:`~.hdf5.HDF5_HEADER` the file holds, each with its units as
        ``<key>_units`` when the file says.
    """

    path: Path
    frames: list[tuple[str, np.ndarray]]
    exposure_s: float | None = None
    count_cutoff: float | None = None
    header: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the first frame."""
        return np.shape(self.frames[0][1])

    def mean(self) -> np.ndarray:
        """Mean of the frames (float64), accumulated frame by frame."""
        total = np.zeros(self.shape, np.float64)
        for _, frame in self.frames:
            total += frame
        return total / len(self.frames)


def _read_fabio(path: Path) -> ImageFile:
    """All frames of an image file that fabio reads, or :class:`CorruptFrameError`."""
    import fabio

    check_complete(path)
    with fabio_errors() as errors, _foreign_errors(f"cannot read frame file {path}"):
        image = fabio.open(str(path))
        frames = [image.data]
        for i in range(1, int(getattr(image, "nframes", 1) or 1)):
            frames.append(image.getframe(i).data)
    if any(frame is None for frame in frames) or errors or getattr(image, "incomplete_file", False):
        detail = "; ".join(errors) or "file is incomplete"
        raise CorruptFrameError(f"cannot read frame file {path} (truncated or corrupt): {detail}")
    header = dict(image.header)
    exposure_s, count_cutoff = header_values(header)
    named = _named(path, [np.asarray(frame) for frame in frames])
    return ImageFile(path, named, exposure_s=exposure_s, count_cutoff=count_cutoff, header=header)


def _read_hdf5(path: Path) -> ImageFile:
    """The frames of an HDF5/NeXus file (see :func:`~.hdf5.frame_datasets`), one per 2D
    slice of each 3D stack, in order, with the header values of :data:`~.hdf5.HDF5_HEADER`."""
    with _foreign_errors(f"cannot read frames from {path}"), open_hdf5(path) as f:
        datasets = frame_datasets(f, path)
        count = sum(dataset.shape[0] if dataset.ndim == 3 else 1 for _, dataset in datasets)
        check_memory(sum(dataset.size * max(dataset.dtype.itemsize, 8) for _, dataset in datasets),
                     f"{path}: {count} frames of {datasets[0][1].shape[-2:]}")
        frames = [frame for where, dataset in datasets for frame in _stack_frames(where, dataset)]
        header = hdf5_header(f)
        cutoff = header.get("countrate_correction_count_cutoff", header.get("saturation_value"))
        return ImageFile(path, _named(path, frames), exposure_s=header.get("count_time"), count_cutoff=cutoff,
                         header=header)


def _stack_frames(where: str, dataset: h5py.Dataset) -> list[np.ndarray]:
    """The frames of a 2D (one frame) or 3D dataset, or :class:`CorruptFrameError` when
    the writer never wrote some of them (a virtual dataset's sources are checked by
    :func:`~.hdf5.frame_datasets`)."""
    if dataset.ndim == 2:
        return [np.asarray(dataset[()])]
    if not dataset.is_virtual:
        _check_written(where, dataset, 0, dataset.shape[0])
    return list(read_stack(dataset, 0, dataset.shape[0], where))


def available_memory_bytes() -> int | None:
    """Memory available to new allocations (bytes, Linux' ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(nbytes: int, what: str) -> None:
    """Raise :class:`ResourceLimitError` when ``what`` needs ``nbytes`` (as float64) and
    more than half of the available memory."""
    available = available_memory_bytes()
    if available is not None and nbytes > available / 2:
        raise ResourceLimitError(f"{what} needs {nbytes / 2**30:.1f} GiB in memory, more than half of the "
                                 f"{available / 2**30:.1f} GiB available: split the stack into several files")


def _named(path: Path, frames: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Name the frames of ``path``: its stem for one frame, ``<stem>_NNNNN`` for a stack."""
    if not frames:
        raise CorruptFrameError(f"{path} holds no frame")
    if len(frames) == 1:
        return [(path.stem, frames[0])]
    return [(f"{path.stem}_{i:05d}", frame) for i, frame in enumerate(frames)]


def _with_timeout(read: Callable[[Path], ImageFile], path: Path, timeout_s: float) -> ImageFile:
    """``read(path)``, abandoned after ``timeout_s`` seconds (:func:`call_with_timeout`)."""
    try:
        return call_with_timeout(lambda: read(path), timeout_s, f"read {path.name}")
    except TimeoutError:
        raise CorruptFrameError(f"reading {path} did not finish within {timeout_s:g} s: the file is probably "
                                "corrupt (a reader looping on a damaged header)") from None


def require_file(path: str | Path, role: str = "frame") -> Path:
    """``path`` as a Path if it is an existing file, else :class:`CorruptFrameError`
    naming the role and the path (missing, or a directory): a command checks every
    input this way before it reads or computes anything."""
    path = Path(path)
    if path.is_dir():
        raise CorruptFrameError(f"{role} file {path} is a directory; give an image file")
    if not path.is_file():
        raise CorruptFrameError(f"{role} file not found: {path}")
    return path


def read_image(path: str | Path, role: str = "frame", *, timeout_s: float = READ_TIMEOUT_S) -> ImageFile:
    """Read every frame of an image file, with its header, checked.

    Parameters
    ----------
    path : str or Path
        A TIFF, EDF, CBF, MAR... file (any format fabio reads; each frame of a
        multi-frame file is returned) or an HDF5/NeXus file (``.h5``, ``.hdf5``,
        ``.nxs``) whose frames are the dataset ``/entry/data/data`` (or a link or
        virtual dataset there), 2D (one frame) or 3D (a stack, frames along the first
        axis), or a Dectris Eiger master whose links ``/entry/data/data_000001``,
        ``data_000002``... name its data files: their frames in that order.
    role : str
        What the file is (``"frame"``, ``"dark"``, ``"mask"``...), for messages.
    timeout_s : float
        Longest the read may take (s).

    Raises
    ------
    CorruptFrameError
        The file is missing, a directory, unreadable, truncated or corrupt, takes
        longer than ``timeout_s`` to read, an HDF5 file has no frames or frames never
        written, or a file an Eiger master links (or a virtual dataset maps) is
        missing; the message names the role and the file (and the link).
    ShapeMismatchError
        A frame is not a 2D array of counts, or the data files of an Eiger master hold
        frames of different shapes.
    ResourceLimitError
        The frames would take more than half of the available memory.
    """
    path = require_file(path, role)
    reader = _read_hdf5 if path.suffix.lower() in HDF5_SUFFIXES else _read_fabio
    try:
        image = _with_timeout(reader, path, timeout_s)
    except CorruptFrameError as exc:
        raise CorruptFrameError(f"{role} file: {exc}" if role != "frame" else str(exc)) from exc
    for name, frame in image.frames:
        if np.ndim(frame) != 2 or np.asarray(frame).dtype.kind not in "biuf":
            raise ShapeMismatchError(f"{role} {name} of {path} is a {np.ndim(frame)}D array of "
                                     f"{np.asarray(frame).dtype}; expected a 2D image of counts")
    return image


def read_frames(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """The ``(name, frame)`` pairs of an image file (see :func:`read_image`)."""
    return read_image(path).frames
