"""The documents of a Bluesky run stored in any Tiled catalog, read through the client.

A run written by bluesky-tiled-plugins' ``TiledWriter`` (this package's catalog or any
other) is rebuilt as the document stream the RunEngine emitted, with no server-side
exporter: the start and stop documents from the run's metadata, the descriptors from
each stream's metadata (bluesky-tiled-plugins' own :func:`build_descriptor_docs`), the
events from each stream's table and arrays, and the frames' files as ``stream_resource``
and ``stream_datum`` documents taken from the arrays' data sources, in the order the
catalog's own JSON-seq exporter gives them. Frames whose files this machine cannot read
(a remote server's disk) are read through the client instead and carried inline in the
events. A databroker (Mongo) catalog served through Tiled has no such layout: its
server's own document export is used, with an error naming the server when it has none.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from bluesky_tiled_plugins.exporters import build_descriptor_docs
from tiled.client.container import Container

from ..errors import (
    CorruptFrameError,
    FrameSourceError,
    MissingMetadataError,
    UsageError,
)
from ..frames.hdf5 import path_from_uri

#: The table of a stream's scalar readings; every other part is an array.
INTERNAL = "internal"
#: How frames are read: in place when readable here, else through the client; in place; through the client.
FRAME_MODES = ("auto", "files", "client")
Document = tuple[str, dict]
#: A document and, for an event whose frames are read through the client, their reader.
Pending = tuple[str, dict, Callable[[], dict] | None]


def is_bluesky_run(node) -> bool:
    """Whether a Tiled node is a Bluesky run (bluesky-tiled-plugins' ``BlueskyRun`` spec)."""
    return any(spec.name == "BlueskyRun" for spec in getattr(node, "specs", ()))


def run_documents(run, where: str = "the catalog", frames: str = "auto") -> Iterator[Document]:
    """The run's documents, as its RunEngine emitted them (events may come as in the
    catalog's export: per stream, frames announced after their events). Everything but
    frames read through the client is read here, so a run that cannot be replayed is
    refused before its first document.

    Parameters
    ----------
    run : BlueskyRun
        A Tiled client of the run.
    where : str
        The catalog, for messages.
    frames : {"auto", "files", "client"}
        How frames are read: from their files in place (``files``; an error when one is
        not readable here), through the client (``client``), or in place when every
        file is readable here and through the client otherwise (``auto``).

    Raises
    ------
    MissingMetadataError
        The node is not a Bluesky run, or has no start document.
    CorruptFrameError
        ``frames="files"`` and a frames file is gone (or not a local file).
    FrameSourceError
        A databroker (Mongo) run whose server exports no documents; frames in several
        files (a TIFF series) to be read in place.
    """
    if frames not in FRAME_MODES:
        raise UsageError(f"frames are read {' or '.join(FRAME_MODES)}, not {frames!r}")
    start = run.metadata.get("start")
    if not is_bluesky_run(run) or not isinstance(start, Mapping) or "uid" not in start:
        raise MissingMetadataError(f"{run.uri} in {where} is not a Bluesky run (no BlueskyRun spec with a "
                                   "start document)")
    if not _sql_layout(run):
        return iter(_server_documents(run, where))
    documents: list[Pending] = []
    streams = _children(run)
    if "streams" in streams and not _is_stream(streams["streams"]):  # an early layout's namespace of streams
        streams = _children(streams["streams"])
    for stream_name in sorted(streams):
        documents.extend(_stream_documents(streams[stream_name], stream_name, start["uid"], frames))
    order = {"stream_resource": 0, "stream_datum": 1}
    documents.sort(key=lambda d: (d[1].get("time", float("inf")), order.get(d[0], 2)))
    stop = run.metadata.get("stop")
    return _emitted(dict(start), documents, dict(stop) if isinstance(stop, Mapping) and stop else None)


def _emitted(start: dict, documents: list[Pending],
             stop: dict | None) -> Iterator[Document]:
    """The documents in order, each event's inline frames read as it is emitted."""
    yield "start", start
    for name, doc, inline in documents:
        yield name, doc if inline is None else {**doc, "data": {**doc["data"], **inline()}}
    if stop is not None:
        yield "stop", stop


def _sql_layout(run) -> bool:
    """Whether the run has bluesky-tiled-plugins' v3 layout (streams of tables and arrays)."""
    return any(spec.name == "BlueskyRun" and spec.version.startswith("3.") for spec in run.specs)


def _children(node) -> dict[str, Any]:
    """The children of a run or a stream by key, with their metadata and data sources:
    one request to the server (a page of children), not two or three per child."""
    return dict(Container.items(getattr(node, "base", node).new_variation(include_data_sources=True)))


def _is_stream(node) -> bool:
    """Whether a Tiled node is a Bluesky event stream."""
    return any(spec.name == "BlueskyEventStream" for spec in getattr(node, "specs", ()))


def _server_documents(run, where: str) -> list[Document]:
    """The documents of a databroker run, exported by its server."""
    try:
        return list(run.documents())
    except Exception as exc:  # httpx/tiled raise many kinds; a 406 means no exporter
        raise FrameSourceError(f"run {run.metadata['start']['uid']} in {where} is a databroker run whose server "
                               f"exports no Bluesky documents ({exc})") from exc


def _stream_documents(stream, stream_name: str, start_uid: str, frames: str) -> list[Pending]:
    """Descriptors, events, stream resources and datums of one stream; each event with
    the reader of its inline frames (None when none)."""
    metadata = dict(stream.metadata)
    descriptors = build_descriptor_docs(metadata, stream_name=stream_name, run_start_uid=start_uid)
    parts = _children(stream)
    names = set(parts)
    rows = _table_rows(parts[INTERNAL]) if INTERNAL in names else {}
    data_keys = metadata.get("data_keys", {})
    external, inline = [], {}
    for key in sorted(names - {INTERNAL}):
        array = parts[key]
        external_key = data_keys.get(key, {}).get("external")
        in_place = _in_place(array, key, start_uid, frames) if external_key and frames != "client" else None
        if in_place is not None:
            external.append(_stream_resource(key, *in_place, metadata, start_uid))
        elif external_key:
            inline[key] = array
        else:
            for seq_num, value in zip(sorted(rows) or itertools.count(1), array.read()):
                rows.setdefault(seq_num, _Row(0.0)).set(key, _builtin(value), None)
    if inline:  # frames read through the client: the descriptor no longer calls them external
        for desc in descriptors:
            for key in inline:
                desc["data_keys"][key] = {k: v for k, v in desc["data_keys"][key].items() if k != "external"}
        if not rows:
            rows = {seq_num: _Row(0.0) for seq_num in range(1, len(next(iter(inline.values()))) + 1)}
    out: list[Pending] = [("descriptor", d, None) for d in descriptors]
    for seq_num in sorted(rows):
        row = rows[seq_num]
        uid = next((d["uid"] for d in reversed(descriptors) if d["time"] <= row.time), descriptors[0]["uid"])
        event = {"seq_num": seq_num, "time": row.time, "uid": f"event-{uid}-{seq_num}", "descriptor": uid,
                 "data": row.data, "timestamps": {**row.timestamps, **{k: row.time for k in inline}}}
        reader = None if not inline else (lambda n=seq_num: {k: _event_frames(a, data_keys[k], n)
                                                             for k, a in inline.items()})
        out.append(("event", event, reader))
    for resource, datum in external:
        out += [("stream_resource", resource, None), ("stream_datum", datum, None)]
    return out


def _event_frames(array, data_key: dict, seq_num: int) -> np.ndarray:
    """The frames of event ``seq_num`` of an array read through the client: one row of a
    stack of events, or the event's ``k`` rows when the events' frames are concatenated
    (the data key's shape starts with ``k`` frames per event)."""
    k = _concatenated(array.shape, data_key.get("shape") or [])
    return np.asarray(array[seq_num - 1] if k is None else array[(seq_num - 1) * k:seq_num * k])


def _concatenated(shape, event_shape) -> int | None:
    """Frames per event when an array concatenates its events' frames (its shape has
    the rank of one event's); None when it stacks events (one more dimension)."""
    return None if len(shape) == len(event_shape) + 1 else max(int(event_shape[0]), 1)


class _Row:
    """One event's readings, as the stream's table and arrays hold them."""

    def __init__(self, time: float):
        self.time = time
        self.data: dict = {}
        self.timestamps: dict = {}

    def set(self, key: str, value, timestamp: float | None) -> None:
        self.data[key] = value
        self.timestamps[key] = self.time if timestamp is None else timestamp


def _builtin(value):
    """A table or array cell as JSON builtins (nested arrays included)."""
    value = value.tolist() if hasattr(value, "tolist") else value
    return [_builtin(v) for v in value] if isinstance(value, list) else value


def _table_rows(table) -> dict[int, _Row]:
    """Rows of a stream's ``internal`` table by sequence number."""
    frame = table.read()
    keys = [k for k in frame.columns if k not in ("seq_num", "time") and not k.startswith("ts_")]
    rows = {}
    for record in frame.to_dict(orient="records"):
        row = rows[int(record["seq_num"])] = _Row(float(record["time"]))
        for key in keys:
            row.set(key, _builtin(record[key]), record.get(f"ts_{key}"))
    return rows


def _in_place(array, key: str, start_uid: str, frames: str) -> tuple[tuple[int, ...], Any,
                                                                      list[tuple[str, Path]]] | None:
    """An external array's shape, data source and files (asset URI, local path), in
    order, when every one is a file this machine reads; None otherwise (then read
    through the client). ``array``: its client, named ``key`` in its stream.

    Raises
    ------
    CorruptFrameError
        ``frames="files"`` and a file is not readable here (or not a file URI).
    """
    try:
        source = array.data_sources()[0]  # listed with the stream's children
    except Exception as exc:  # a server that does not list data sources
        if frames == "files":
            raise CorruptFrameError(f"run {start_uid} cannot be replayed: the catalog lists no files of its "
                                    f"frames {key!r} ({exc})") from exc
        return None
    files = []
    for asset in sorted(source.assets, key=lambda a: a.num or 0):
        if asset.parameter not in ("data_uris", "data_uri"):
            continue
        try:
            path = path_from_uri(asset.data_uri)
            if not path.is_file():
                raise CorruptFrameError(f"its frames file {path} ({key}) is gone")
        except CorruptFrameError as exc:
            if frames == "files":
                raise CorruptFrameError(f"run {start_uid} cannot be replayed: {exc}") from exc
            return None
        files.append((asset.data_uri, path))
    if not files or (len(files) > 1 and frames == "auto"):
        return None  # a series of files is not read in place: through the client
    return tuple(array.shape), source, files


def _stream_resource(key: str, shape: tuple[int, ...], source, files: list[tuple[str, Path]], metadata: dict,
                     start_uid: str) -> tuple[dict, dict]:
    """The ``stream_resource`` and ``stream_datum`` of an external array kept in one
    file (as ophyd-async and TiledWriter's conversion of AD_HDF5 resources keep it).

    Raises
    ------
    FrameSourceError
        The frames span several files (a multipart TIFF series): not readable in place.
    """
    if len(files) != 1:
        raise FrameSourceError(f"frames {key!r} of run {start_uid} are {len(files)} files "
                               f"({files[0][1]}, ...): only frames in one HDF5 file are read in place")
    k = _concatenated(shape, metadata["data_keys"][key]["shape"])
    n = shape[0] if k is None else shape[0] // k
    desc_uid = metadata["uid"]
    resource = {"data_key": key, "uid": f"sr-{desc_uid}-{key}", "run_start": start_uid, "mimetype": source.mimetype,
                "parameters": {"join_method": "stack" if k is None else "concat", **dict(source.parameters)},
                "uri": files[0][0]}
    datum = {"uid": f"sd-{desc_uid}-{key}-0", "stream_resource": resource["uid"], "descriptor": desc_uid,
             "indices": {"start": 0, "stop": n}, "seq_nums": {"start": 1, "stop": n + 1}}
    return resource, datum
