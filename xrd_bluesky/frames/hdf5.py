"""HDF5 files as detectors write them: opened while a detector may still be writing, with
frames whose storage was never allocated, in the NeXus/area-detector and Eiger layouts.

A file is opened the way its writer allows: without a file lock (a reader's lock
would make the detector's next append fail, from another process), with the lock
when this process's writer holds the file locked (HDF5 refuses mismatched flags in
one process), as a SWMR reader when the writer is in SWMR mode; the environment's
``HDF5_USE_FILE_LOCKING`` decides when it is set. The frames are read by
:mod:`.reader`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other detector filters)
import numpy as np

from ..errors import CorruptFrameError, ShapeMismatchError

#: Suffixes of the image files read with h5py; everything else goes through fabio.
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


def unwritten_frames(dset: h5py.Dataset, start: int, stop: int) -> list[int]:
    """Frames ``start..stop-1`` of ``dset`` whose storage HDF5 never allocated: a file
    closed before the detector wrote them reads back as the fill value, not as data."""
    if dset.chunks is None:
        return [] if dset.id.get_offset() is not None or dset.id.get_storage_size() else list(range(start, stop))
    per_chunk = dset.chunks[0]
    return [i for i in range(start, stop)
            if dset.id.get_chunk_info_by_coord((i - i % per_chunk, 0, 0)).byte_offset is None]


def frame_datasets(f: h5py.File, path: Path) -> list[tuple[str, h5py.Dataset]]:
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


def hdf5_header(f: h5py.File) -> dict[str, float | str]:
    """The values of :data:`HDF5_HEADER` that ``f`` holds as positive finite numbers,
    each with its ``units`` attribute as ``<key>_units``."""
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
