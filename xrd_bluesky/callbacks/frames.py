"""Read detector frames announced by StreamResource / StreamDatum documents."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other detector filters)
import numpy as np

from ..errors import CorruptFrameError, MissingMetadataError, ShapeMismatchError

#: Python types a document field may be checked against, with the name messages use.
FIELD_KINDS = {str: "text", int: "an integer", dict: "a mapping", list: "a list"}


def document_field(doc: Mapping, key: str, kind: type, what: str) -> Any:
    """``doc[key]``, checked to be of ``kind`` (``str``, ``int``, ``dict`` or ``list``;
    any mapping passes as ``dict``, a tuple as ``list``, and a bool is not an int).

    Parameters
    ----------
    doc : Mapping
        A document (or part of one).
    key : str
        The key to read.
    kind : type
        One of :data:`FIELD_KINDS`.
    what : str
        What ``doc`` is (e.g. ``"event 1f3c..."``), for the message.

    Raises
    ------
    MissingMetadataError
        Naming ``what`` and ``key`` when ``doc`` is not a mapping, lacks ``key`` or
        holds a value of another kind there (the value is named).
    """
    if not isinstance(doc, Mapping) or key not in doc:
        raise MissingMetadataError(f"{what} has no {key!r} key")
    value = doc[key]
    accepted = {dict: Mapping, list: (list, tuple), int: (int, np.integer)}.get(kind, kind)
    if not isinstance(value, accepted) or (kind is int and isinstance(value, bool)):
        raise MissingMetadataError(f"{what}: {key!r} is {value!r}, not {FIELD_KINDS[kind]}")
    return value


def document_uid(doc: Mapping) -> str:
    """The document's ``uid`` for messages (``"?"`` when it has none)."""
    return str(doc.get("uid", "?")) if isinstance(doc, Mapping) else "?"


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
            # no HDF5 file lock: the detector may still append to this file (from another
            # process, e.g. when a worker analyses a scan live), and a reader's lock
            # would make its next append fail
            with h5py.File(self.path, "r", locking=False) as f:
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


@dataclass(frozen=True)
class FrameSpan:
    """The frames one StreamDatum announces: those of the event with sequence number
    ``s`` (``seq_start <= s < seq_stop``) are at event index
    ``index_start + s - seq_start`` of ``dataset`` in ``path`` (see :meth:`FrameRef.read`)."""

    data_key: str
    path: Path
    dataset: str
    index_start: int
    seq_start: int
    seq_stop: int

    def __contains__(self, seq_num: int) -> bool:
        return self.seq_start <= seq_num < self.seq_stop

    @property
    def n_events(self) -> int:
        """Number of events announced (not ``len``: a bogus document may announce more
        than an index can hold)."""
        return self.seq_stop - self.seq_start

    def ref(self, seq_num: int) -> FrameRef:
        """Where the frames of event ``seq_num`` are."""
        return FrameRef(self.path, self.dataset, self.index_start + seq_num - self.seq_start)


class StreamFrames:
    """Resolve StreamDatum documents to the :class:`FrameSpan` they announce."""

    def __init__(self) -> None:
        self._resources: dict[str, dict] = {}

    def stream_resource(self, doc: dict) -> None:
        """Remember a StreamResource (checked when a StreamDatum refers to it)."""
        self._resources[document_field(doc, "uid", str, "stream_resource")] = doc

    def span(self, doc: dict) -> FrameSpan:
        """The frames a StreamDatum announces.

        Raises
        ------
        MissingMetadataError
            A key of the StreamDatum or of its StreamResource is missing or unusable
            (named), the StreamResource is unknown, or the index and sequence-number
            ranges do not pair up.
        CorruptFrameError
            The StreamResource's URI is not a local file.
        """
        what = f"stream_datum {document_uid(doc)}"
        resource_uid = document_field(doc, "stream_resource", str, what)
        resource = self._resources.get(resource_uid)
        if resource is None:
            raise MissingMetadataError(f"{what} names unknown stream_resource {resource_uid}")
        what_resource = f"stream_resource {resource_uid}"
        path = path_from_uri(document_field(resource, "uri", str, what_resource))
        parameters = document_field(resource, "parameters", dict, what_resource)
        dataset = parameters.get("dataset", "/entry/data/data")
        if not isinstance(dataset, str):
            raise MissingMetadataError(f"{what_resource}: parameter 'dataset' is {dataset!r}, not text")
        data_key = document_field(resource, "data_key", str, what_resource)
        ranges = {}
        for name in ("indices", "seq_nums"):
            span = document_field(doc, name, dict, what)
            ranges[name] = tuple(int(document_field(span, end, int, f"{what} {name}")) for end in ("start", "stop"))
        (i0, i1), (s0, s1) = ranges["indices"], ranges["seq_nums"]
        if i0 < 0 or i1 < i0 or i1 - i0 != s1 - s0:
            raise MissingMetadataError(f"{what}: indices {i0}-{i1} and seq_nums {s0}-{s1} do not pair up")
        return FrameSpan(data_key, path, dataset, i0, s0, s1)
