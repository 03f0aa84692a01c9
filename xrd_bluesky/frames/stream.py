"""Frames announced by StreamResource / StreamDatum documents (ophyd-async and
any detector writing event-model 1.x stream documents)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingMetadataError
from ..schema.documents import document_field, document_uid
from .hdf5 import path_from_uri
from .reader import FrameRef


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
