"""One reader for image files (TIFF, EDF, CBF, MAR... through fabio; HDF5/NeXus through
h5py), used by every command that takes frames, darks, masks or gain maps.

Every read is checked: a missing file or a directory, a truncated TIFF strip or CBF
binary section, a file that fabio reports broken only in its log, an HDF5 file
without frames, and a reader that does not return within :data:`READ_TIMEOUT_S` (fabio
loops on some cut CBF headers) all give a :class:`~xrd_bluesky.errors.CorruptFrameError`
naming the file. The header values that matter to the checks (exposure time, the
detector's count cut-off) are read along with the frames.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CorruptFrameError, ResourceLimitError, ShapeMismatchError, XRDBlueskyError
from ..timeouts import call_with_timeout

#: Suffixes read with h5py; everything else goes through fabio.
HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs")

#: Dataset of the frames in an HDF5/NeXus file (NeXus/area-detector convention).
HDF5_DATASET = "/entry/data/data"

#: Exposure time and count cut-off in a NeXus/Eiger file, when present.
HDF5_EXPOSURE = "/entry/instrument/detector/count_time"
HDF5_CUTOFF = "/entry/instrument/detector/detectorSpecific/countrate_correction_count_cutoff"

#: Longest a file read may take (s); a 2M-pixel frame reads in well under a second.
READ_TIMEOUT_S = 30.0

#: Start of the binary section of a CBF file (fabio's ``CbfImage.STARTER``).
_CBF_BINARY_START = b"\x0c\x1a\x04\xd5"

#: First bytes of a TIFF file (little- and big-endian).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")

#: Exposure time in a header: mini-CBF (``# Exposure_time 1.0 s``), EDF and others.
_EXPOSURE_KEYS = ("Exposure_time", "ExposureTime", "exposure_time", "count_time", "acq_expo_time", "Exposure")

#: Count cut-off of a Pilatus/Eiger mini-CBF header (``# Count_cutoff 1048574 counts``).
_CUTOFF = re.compile(r"Count_cutoff\s+([0-9.eE+]+)")


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
        The raw header (fabio's; empty for HDF5).
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


@contextmanager
def _fabio_errors() -> Iterator[list[str]]:
    """Collect the messages fabio logs at ERROR level while the block runs.

    fabio reports some corrupt files only in its log: a truncated TIFF gives
    ``data = None``, a CBF with a bad checksum gives data anyway."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(level=logging.ERROR)
    logger = logging.getLogger("fabio")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _tiff_truncation(path: Path) -> str | None:
    """Why the TIFF file ``path`` is truncated — a strip of image data that ends beyond
    the end of the file — or None.

    fabio reads a compressed TIFF through PIL/libtiff, which decode a strip cut short
    into an image padded with garbage and say so only on the C library's stderr."""
    from fabio import TiffIO

    size = path.stat().st_size
    try:
        with TiffIO.TiffIO(str(path)) as tiff:
            infos = [tiff.getInfo(i) for i in range(tiff.getNumberOfImages())]
    except struct.error as exc:  # TiffIO ran off the end of the file
        return f"an image file directory is cut short ({exc})"
    except Exception:  # layouts TiffIO cannot parse (tiled TIFF): PIL itself refuses those cut short
        return None
    for i, info in enumerate(infos):
        for j, (offset, count) in enumerate(zip(info["stripOffsets"], info["stripByteCounts"])):
            if offset + count > size:
                return f"strip {j} of image {i} ends at byte {offset + count}, the file has {size} bytes"
    return None


def _header_number(header: dict, keys: tuple[str, ...]) -> float | None:
    """The first of ``keys`` in ``header`` whose value starts with a positive number."""
    for key in keys:
        match = re.match(r"\s*([0-9.]+(?:[eE][+-]?[0-9]+)?)", str(header.get(key, "")))
        if match:
            try:
                value = float(match.group(1))
            except ValueError:
                continue
            if value > 0:
                return value
    return None


def _mini_cbf(header: dict) -> dict:
    """The ``# Key value`` lines of a mini-CBF header (Pilatus/Eiger) as a dict."""
    text = str(header.get("_array_data.header_contents", ""))
    lines = (line.lstrip("# ").split(None, 1) for line in text.splitlines())
    return {parts[0]: parts[1] for parts in lines if len(parts) == 2}


def _read_fabio(path: Path) -> ImageFile:
    """All frames of an image file that fabio reads, or :class:`CorruptFrameError`."""
    import fabio

    if path.suffix.lower() == ".cbf" and _CBF_BINARY_START not in path.read_bytes():
        # fabio loops for ever looking for the binary section of such a file
        raise CorruptFrameError(f"cannot read frame file {path} (truncated or corrupt): no CBF binary section")
    with open(path, "rb") as f:
        is_tiff = f.read(4) in _TIFF_MAGIC
    truncation = _tiff_truncation(path) if is_tiff else None
    if truncation:
        raise CorruptFrameError(f"cannot read frame file {path} (truncated TIFF): {truncation}")
    with _fabio_errors() as errors:
        try:
            image = fabio.open(str(path))
            frames = [image.data]
            for i in range(1, int(getattr(image, "nframes", 1) or 1)):
                frames.append(image.getframe(i).data)
        except Exception as exc:  # fabio raises many types on bad files
            raise CorruptFrameError(f"cannot read frame file {path}: {type(exc).__name__}: {exc}") from exc
    if any(frame is None for frame in frames) or errors or getattr(image, "incomplete_file", False):
        detail = "; ".join(errors) or "file is incomplete"
        raise CorruptFrameError(f"cannot read frame file {path} (truncated or corrupt): {detail}")
    header = dict(image.header)
    cbf = _mini_cbf(header)
    cutoff = _CUTOFF.search(str(header.get("_array_data.header_contents", "")))
    named = _named(path, [np.asarray(frame) for frame in frames])
    return ImageFile(path, named, exposure_s=_header_number({**header, **cbf}, _EXPOSURE_KEYS),
                     count_cutoff=float(cutoff.group(1)) if cutoff else None, header=header)


def _read_hdf5(path: Path) -> ImageFile:
    """The frames of :data:`HDF5_DATASET` in ``path`` (one per 2D slice of a 3D stack)."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other detector filters)

    def scalar(f, key: str) -> float | None:
        value = f.get(key)
        if not isinstance(value, h5py.Dataset) or value.size != 1:
            return None
        number = float(np.asarray(value[()]).ravel()[0])
        return number if number > 0 else None

    try:
        with h5py.File(path, "r") as f:
            dataset = f.get(HDF5_DATASET)
            if not isinstance(dataset, h5py.Dataset):
                raise CorruptFrameError(f"{path} has no dataset {HDF5_DATASET}")
            if dataset.ndim not in (2, 3):
                raise ShapeMismatchError(f"{path}:{HDF5_DATASET} has shape {dataset.shape}; "
                                         "expected one frame (2D) or a stack of frames (3D)")
            check_memory(dataset.size * max(dataset.dtype.itemsize, 8), f"{path}:{HDF5_DATASET} {dataset.shape}")
            frames = [np.asarray(dataset[()])] if dataset.ndim == 2 else [
                np.asarray(dataset[i]) for i in range(dataset.shape[0])]
            return ImageFile(path, _named(path, frames), exposure_s=scalar(f, HDF5_EXPOSURE),
                             count_cutoff=scalar(f, HDF5_CUTOFF))
    except XRDBlueskyError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... on bad files
        raise CorruptFrameError(f"cannot read {HDF5_DATASET} from {path}: {type(exc).__name__}: {exc}") from exc


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
        ``.nxs``) whose frames are the dataset ``/entry/data/data``, 2D (one frame) or
        3D (a stack, frames along the first axis).
    role : str
        What the file is (``"frame"``, ``"dark"``, ``"mask"``...), for messages.
    timeout_s : float
        Longest the read may take (s).

    Raises
    ------
    CorruptFrameError
        The file is missing, a directory, unreadable, truncated or corrupt, takes
        longer than ``timeout_s`` to read, or an HDF5 file has no
        ``/entry/data/data``; the message names the role and the file.
    ShapeMismatchError
        A frame is not a 2D array of counts.
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
