"""One reader for image files (TIFF, EDF, CBF, MAR... through fabio; HDF5/NeXus through
h5py), used by every command that takes frames, darks, masks or gain maps.

Every read is checked: a missing file or a directory, a truncated TIFF strip or CBF
binary section, a file that fabio reports broken only in its log, an HDF5 file
without frames or whose frames were never written, an Eiger master whose data file is
missing, and a reader that does not return within :data:`READ_TIMEOUT_S` (fabio
loops on some cut CBF headers) all give a :class:`~xrd_bluesky.errors.CorruptFrameError`
naming the file. The header values that matter to the checks (exposure time, the
detector's count cut-off) are read along with the frames.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import (
    CorruptFrameError,
    ResourceLimitError,
    ShapeMismatchError,
    XRDBlueskyError,
)
from ..timeouts import call_with_timeout

if TYPE_CHECKING:
    import h5py

#: Suffixes read with h5py; everything else goes through fabio.
HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs")

#: Dataset of the frames in an HDF5/NeXus file (NeXus/area-detector convention).
HDF5_DATASET = "/entry/data/data"

#: Group of an Eiger master's links to its data files, named by :data:`EIGER_LINK`.
HDF5_GROUP = "/entry/data"
EIGER_LINK = re.compile(r"data_(\d{6})")

#: Header values of a NeXus/Eiger file, by key: the first of the datasets that holds a
#: positive number (the exposure time is ``count_time``; the count cut-off
#: ``countrate_correction_count_cutoff``, else ``saturation_value``).
_DETECTOR = "/entry/instrument/detector"
HDF5_HEADER = {
    "count_time": (f"{_DETECTOR}/count_time",),
    "countrate_correction_count_cutoff": (f"{_DETECTOR}/detectorSpecific/countrate_correction_count_cutoff",),
    "saturation_value": (f"{_DETECTOR}/saturation_value", f"{_DETECTOR}/detectorSpecific/saturation_value"),
    "x_pixel_size": (f"{_DETECTOR}/x_pixel_size",),
    "y_pixel_size": (f"{_DETECTOR}/y_pixel_size",),
    "detector_distance": (f"{_DETECTOR}/detector_distance", f"{_DETECTOR}/distance"),
    "wavelength": ("/entry/instrument/beam/incident_wavelength", "/entry/instrument/monochromator/wavelength",
                   "/entry/sample/beam/incident_wavelength"),
}

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
        The raw header (fabio's); for HDF5, the values of :data:`HDF5_HEADER` the
        file holds, each with its units as ``<key>_units`` when the file says.
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
    """The frames of an HDF5/NeXus file (see :func:`_frame_datasets`), one per 2D slice
    of each 3D stack, in order, with the header values of :data:`HDF5_HEADER`."""
    import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other detector filters)

    from ..frames.hdf5 import open_hdf5

    try:
        with open_hdf5(path) as f:
            datasets = _frame_datasets(f, path)
            count = sum(dataset.shape[0] if dataset.ndim == 3 else 1 for _, dataset in datasets)
            check_memory(sum(dataset.size * max(dataset.dtype.itemsize, 8) for _, dataset in datasets),
                         f"{path}: {count} frames of {datasets[0][1].shape[-2:]}")
            frames = [frame for where, dataset in datasets for frame in _stack_frames(where, dataset)]
            header = _hdf5_header(f)
            cutoff = header.get("countrate_correction_count_cutoff", header.get("saturation_value"))
            return ImageFile(path, _named(path, frames), exposure_s=header.get("count_time"), count_cutoff=cutoff,
                             header=header)
    except XRDBlueskyError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... on bad files
        raise CorruptFrameError(f"cannot read frames from {path}: {type(exc).__name__}: {exc}") from exc


def _frame_datasets(f: h5py.File, path: Path) -> list[tuple[str, h5py.Dataset]]:
    """``(where, dataset)`` of the frames of the open HDF5 file ``f`` (at ``path``):
    :data:`HDF5_DATASET` (a dataset, a link or a virtual dataset), else the data files
    that an Eiger master links as :data:`HDF5_GROUP`/``data_000001``, ``data_000002``...
    in the order of their numbers, all of frames of one shape.

    Raises
    ------
    CorruptFrameError
        Neither is there, the links skip a number, a linked file or a virtual
        dataset's source file is missing.
    ShapeMismatchError
        A dataset is not 2D or 3D, or two data files hold frames of different shapes.
    """
    if f.get(HDF5_DATASET, getlink=True) is not None:
        names = [HDF5_DATASET]
    else:
        names = _eiger_links(f, path)
    datasets = [(_where(f, path, name), _linked_dataset(f, path, name)) for name in names]
    for where, dataset in datasets:
        if dataset.ndim not in (2, 3):
            raise ShapeMismatchError(f"{where} has shape {dataset.shape}; "
                                     "expected one frame (2D) or a stack of frames (3D)")
    first, first_set = datasets[0]
    for where, dataset in datasets[1:]:
        if dataset.shape[-2:] != first_set.shape[-2:]:
            raise ShapeMismatchError(f"{path}: frames of {first} have shape {first_set.shape[-2:]}, frames of "
                                     f"{where} {dataset.shape[-2:]}; the data files of one master must match")
    return datasets


def _eiger_links(f: h5py.File, path: Path) -> list[str]:
    """Names of the data links ``data_000001``, ``data_000002``... of the Eiger master
    ``f`` (at ``path``) by number, or :class:`CorruptFrameError`."""
    group = f.get(HDF5_GROUP)
    members = group.keys() if hasattr(group, "keys") else []
    numbered = sorted((int(match.group(1)), name) for name in members if (match := EIGER_LINK.fullmatch(name)))
    if not numbered:
        what = "an Eiger master without data links" if path.stem.endswith("_master") else "an HDF5 file without frames"
        raise CorruptFrameError(f"{path} is {what}: no dataset {HDF5_DATASET} and no links "
                                f"{HDF5_GROUP}/data_000001, data_000002...")
    numbers = [number for number, _ in numbered]
    absent = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if absent:
        raise CorruptFrameError(f"Eiger master {path} links {', '.join(name for _, name in numbered)} but not "
                                f"{', '.join(f'data_{n:06d}' for n in absent)}: a data file is missing from the series")
    return [f"{HDF5_GROUP}/{name}" for _, name in numbered]


def _where(f: h5py.File, path: Path, name: str) -> str:
    """``path:name``, followed by the file and dataset it links to when ``name`` is an external link."""
    import h5py

    link = f.get(name, getlink=True)
    target = f" (-> {_link_file(path, link)}:{link.path})" if isinstance(link, h5py.ExternalLink) else ""
    return f"{path}:{name}{target}"


def _link_file(path: Path, link: h5py.ExternalLink) -> Path:
    """The file an external link of the file ``path`` names, relative to ``path``'s folder
    (where HDF5 looks for it) unless absolute."""
    return path.parent / link.filename


def _linked_dataset(f: h5py.File, path: Path, name: str) -> h5py.Dataset:
    """The dataset ``name`` of ``f`` (at ``path``), through its link: a
    :class:`CorruptFrameError` names a link to a missing file or object, and a virtual
    dataset's missing source file (HDF5 would read its fill value)."""
    import h5py

    link = f.get(name, getlink=True)
    try:
        dataset = f[name]
    except KeyError as exc:
        if not isinstance(link, h5py.ExternalLink):
            raise CorruptFrameError(f"{path}:{name} links to nothing ({link}): {exc}") from exc
        target = _link_file(path, link)
        if not target.is_file():
            raise CorruptFrameError(f"{path}: link {name} names the data file {target}, which is missing") from exc
        raise CorruptFrameError(f"{path}: link {name} names {link.path} in {target}, which cannot be opened: "
                                f"{exc}") from exc
    if not isinstance(dataset, h5py.Dataset):
        raise CorruptFrameError(f"{path}:{name} is not a dataset of frames")
    sources = dataset.virtual_sources() if dataset.is_virtual else []
    for source in sources:  # HDF5 looks beside the file, then in the working directory
        beside = path.parent / source.file_name
        if source.file_name != "." and not (beside.is_file() or Path(source.file_name).is_file()):
            raise CorruptFrameError(f"{path}: virtual dataset {name} maps the source file {beside}, which is missing")
    return dataset


def _stack_frames(where: str, dataset: h5py.Dataset) -> list[np.ndarray]:
    """The frames of a 2D (one frame) or 3D dataset, or :class:`CorruptFrameError` when
    the writer never wrote some of them (their storage is unallocated: HDF5 would read
    the fill value)."""
    from ..frames.hdf5 import _unwritten

    if dataset.ndim == 2:
        return [np.asarray(dataset[()])]
    missing = [] if dataset.is_virtual else _unwritten(dataset, 0, dataset.shape[0])
    if missing:
        raise CorruptFrameError(f"{where}: frames {missing} were never written (no storage allocated)")
    return [np.asarray(dataset[i]) for i in range(dataset.shape[0])]


def _hdf5_header(f: h5py.File) -> dict[str, float | str]:
    """The values of :data:`HDF5_HEADER` that ``f`` holds as positive finite numbers,
    each with its ``units`` attribute as ``<key>_units``."""
    import h5py

    header: dict[str, float | str] = {}
    for key, candidates in HDF5_HEADER.items():
        for name in candidates:
            value = f.get(name)
            if not isinstance(value, h5py.Dataset) or value.size != 1 or value.dtype.kind not in "biuf":
                continue
            number = float(np.asarray(value[()]).ravel()[0])
            if math.isfinite(number) and number > 0:
                header[key] = number
                units = value.attrs.get("units")
                if units is not None:
                    header[f"{key}_units"] = units.decode() if isinstance(units, bytes) else str(units)
                break
    return header


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
