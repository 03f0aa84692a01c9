"""Pair each event of a run with its detector frames, whatever the document order.

Live, a StreamDatum arrives before its event; exported from Tiled (replay), all
events of a stream come first. :class:`FrameEvents` collects both and hands out the
pairs that are complete.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import MissingMetadataError, ShapeMismatchError
from ..science.geometry import StagePosition
from ..science.monitors import positive
from .frames import FrameSpan, StreamFrames, document_field, document_uid


@dataclass(frozen=True)
class FrameEvent:
    """One event with its frames (``(frames_per_event, rows, columns)`` counts)."""

    stream: str
    seq_num: int
    event: dict
    descriptor: dict
    frames: np.ndarray


class FrameEvents:
    """Collects descriptors, events, StreamResources and StreamDatums of one run.

    Every document method raises :class:`~xrd_bluesky.errors.MissingMetadataError`
    naming the document and key when a key it needs is missing or unusable.
    """

    def __init__(self) -> None:
        self._frames = StreamFrames()
        self._descriptors: dict[str, dict] = {}
        self._events: dict[tuple[str, int], dict] = {}
        # per stream: announced frame spans, each with the sequence numbers handed out;
        # spans stay ranges (a replayed run announces all its frames in one)
        self._spans: dict[str, list[tuple[FrameSpan, set[int]]]] = {}

    def descriptor(self, doc: dict) -> None:
        """Remember a descriptor (it needs a ``uid`` and a stream ``name``)."""
        what = f"descriptor {document_uid(doc)}"
        document_field(doc, "name", str, what)
        self._descriptors[document_field(doc, "uid", str, "descriptor")] = doc

    def stream_resource(self, doc: dict) -> None:
        """Remember a StreamResource (checked when a StreamDatum refers to it)."""
        self._frames.stream_resource(doc)

    def event(self, doc: dict) -> None:
        """Keep an event (of a known descriptor, with an integer ``seq_num``) until its
        frames are announced."""
        what = f"event {document_uid(doc)}"
        self._events[(self._stream(doc, what), document_field(doc, "seq_num", int, what))] = doc

    def stream_datum(self, doc: dict) -> None:
        """Keep the frames a StreamDatum (of a known descriptor) announces."""
        stream = self._stream(doc, f"stream_datum {document_uid(doc)}")
        self._spans.setdefault(stream, []).append((self._frames.span(doc), set()))

    def _stream(self, doc: dict, what: str) -> str:
        """Name of the stream of the descriptor that ``doc`` (``what``) refers to."""
        uid = document_field(doc, "descriptor", str, what)
        if uid not in self._descriptors:
            raise MissingMetadataError(f"{what} names descriptor {uid}, which has not arrived")
        return self._descriptors[uid]["name"]

    def ready(self, stream: str) -> list[FrameEvent]:
        """Pop and read every complete (event, frames) pair of ``stream``, in order
        (a later StreamDatum announcing the same event's frames wins)."""
        out = []
        spans = self._spans.get(stream, [])
        for key in sorted(k for k in self._events if k[0] == stream):
            seq_num = key[1]
            match = next(((span, taken) for span, taken in reversed(spans)
                          if seq_num in span and seq_num not in taken), None)
            if match is None:
                continue
            span, taken = match
            taken.add(seq_num)
            event = self._events.pop(key)
            desc = self._descriptors[event["descriptor"]]
            out.append(FrameEvent(stream, seq_num, event, desc, span.ref(seq_num).read(frames_per_event(desc))))
        self._spans[stream] = [(span, taken) for span, taken in spans if len(taken) < span.n_events]
        return out

    def unmatched_frames(self) -> list[tuple[str, int, int]]:
        """(stream, first, last sequence number) of each run of announced frames still
        waiting for their event."""
        runs = []
        for stream, spans in self._spans.items():
            for span, taken in spans:
                start = span.seq_start
                for seq_num in sorted(taken) + [span.seq_stop]:
                    if seq_num > start:
                        runs.append((stream, start, seq_num - 1))
                    start = seq_num + 1
        return sorted(runs)


def frames_per_event(descriptor: dict) -> int:
    """Frames per event of the descriptor's (first) external image key: the first
    entry of its ``shape``, at least 1.

    Raises
    ------
    MissingMetadataError
        The descriptor has no ``data_keys``, no external (``STREAM:``) key, or that
        key's ``shape`` does not start with a whole number >= 1 (key and value named).
    """
    what = f"descriptor {document_uid(descriptor)}"
    for name, key in document_field(descriptor, "data_keys", dict, what).items():
        if isinstance(key, Mapping) and isinstance(key.get("external"), str) and key["external"] == "STREAM:":
            shape = document_field(key, "shape", list, f"{what} data key {name!r}")
            n = shape[0] if shape else None
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise MissingMetadataError(f"{what} data key {name!r} has shape {shape!r}: its first entry "
                                           "(frames per event) must be a whole number >= 1")
            return int(n)
    raise MissingMetadataError(f"{what} has no external (STREAM:) image key")


def detector_config(descriptor: dict) -> dict:
    """Model name (``*_model``), counter depth (``*_max_count``, counts; None if absent
    or 0, which means unknown) and frame exposure (``*_acquire_time``, s; None if
    absent) of the stream's area-detector configuration.

    Raises
    ------
    MissingMetadataError
        No configuration has a ``*_model`` key, or the model is not text, or the
        counter depth or exposure is not a positive finite number (key and value named).
    """
    what = f"descriptor {document_uid(descriptor)}"
    configuration = descriptor.get("configuration", {}) if isinstance(descriptor, Mapping) else {}
    for device, config in (configuration.items() if isinstance(configuration, Mapping) else ()):
        data = config.get("data", {}) if isinstance(config, Mapping) else {}
        if not isinstance(data, Mapping):
            continue
        model_key = next((k for k in data if isinstance(k, str) and k.endswith("_model")), None)
        if model_key is None or data[model_key] is None or isinstance(data[model_key], str) and not data[model_key]:
            continue  # no model named here
        out = {"model": document_field(data, model_key, str, f"{what} configuration {device!r}")}
        for name, suffix, unit in (("max_count", "_max_count", "counts"), ("acquire_time", "_acquire_time", "s")):
            key = next((k for k in data if isinstance(k, str) and k.endswith(suffix)), None)
            value = None if key is None or data[key] is None else positive(
                f"{what} configuration {device!r} {key}", data[key], unit, allow_zero=name == "max_count",
                error=MissingMetadataError)
            out[name] = None if value == 0 else value  # a counter depth of 0: unknown
        return out
    raise MissingMetadataError(f"{what} has no detector configuration with a '*_model' key")


def stage_position(event: dict, stage_keys: Mapping[str, str] | None) -> StagePosition | None:
    """Detector-stage position (mm) read in ``event``; None if the run names no stage.

    Raises
    ------
    MissingMetadataError
        ``stage_keys`` is not a mapping or lacks an axis (``x``, ``y``, ``distance``),
        or the event lacks a reading of a stage motor or holds one that is not a finite
        number (motor and value named).
    """
    if stage_keys is None or isinstance(stage_keys, Mapping) and not stage_keys:
        return None
    if not isinstance(stage_keys, Mapping):
        raise MissingMetadataError(f"the run's stage_motors {stage_keys!r} is not a mapping of axis to motor name")
    what = f"event {document_uid(event)}"
    data = document_field(event, "data", dict, what)
    readings = []
    for axis in ("x", "y", "distance"):
        motor = document_field(stage_keys, axis, str, "the run's stage_motors")
        if motor not in data:
            raise MissingMetadataError(f"stage motor reading {motor!r} ({axis}) missing from {what}")
        value = data[motor]
        if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise MissingMetadataError(f"stage motor reading {motor}={value!r} ({axis}) of {what} "
                                       "is not a finite number (mm)")
        readings.append(float(value))
    return StagePosition(*readings)


def mean_dark(frame_events: list[FrameEvent]) -> np.ndarray:
    """Mean dark frame (counts per frame) of dark-stream events.

    Raises
    ------
    MissingMetadataError
        No dark events.
    ShapeMismatchError
        The events' frames differ in shape (sequence numbers named).
    """
    if not frame_events:
        raise MissingMetadataError("no dark frames to average")
    shapes = {fe.frames.shape[1:] for fe in frame_events}
    if len(shapes) > 1:
        raise ShapeMismatchError("dark frames differ in shape: " + ", ".join(
            f"seq_num {fe.seq_num} {fe.frames.shape[1:]}" for fe in frame_events))
    return np.concatenate([fe.frames for fe in frame_events]).astype(np.float64).mean(axis=0)
