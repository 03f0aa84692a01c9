"""Pair each event of a run with its detector frames, whatever the document order.

Live, a StreamDatum arrives before its event; exported from Tiled (replay), all
events of a stream come first. :class:`FrameEvents` collects both and hands out the
pairs that are complete.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MissingMetadataError
from ..science.geometry import StagePosition
from .frames import FrameRef, StreamFrames


@dataclass(frozen=True)
class FrameEvent:
    """One event with its frames (``(frames_per_event, rows, columns)`` counts)."""

    stream: str
    seq_num: int
    event: dict
    descriptor: dict
    frames: np.ndarray


class FrameEvents:
    """Collects descriptors, events, StreamResources and StreamDatums of one run."""

    def __init__(self) -> None:
        self._frames = StreamFrames()
        self._descriptors: dict[str, dict] = {}
        self._events: dict[tuple[str, int], dict] = {}
        self._refs: dict[tuple[str, int], FrameRef] = {}

    def descriptor(self, doc: dict) -> None:
        self._descriptors[doc["uid"]] = doc

    def stream_resource(self, doc: dict) -> None:
        self._frames.stream_resource(doc)

    def event(self, doc: dict) -> None:
        self._events[(self._descriptors[doc["descriptor"]]["name"], doc["seq_num"])] = doc

    def stream_datum(self, doc: dict) -> None:
        stream = self._descriptors[doc["descriptor"]]["name"]
        for seq_num, ref in self._frames.refs(doc)[1]:
            self._refs[(stream, seq_num)] = ref

    def ready(self, stream: str) -> list[FrameEvent]:
        """Pop and read every complete (event, frames) pair of ``stream``, in order."""
        out = []
        for key in sorted(k for k in self._refs if k in self._events and k[0] == stream):
            ref, event = self._refs.pop(key), self._events.pop(key)
            desc = self._descriptors[event["descriptor"]]
            out.append(FrameEvent(stream, key[1], event, desc, ref.read(frames_per_event(desc))))
        return out

    def unmatched_frames(self) -> list[tuple[str, int]]:
        """(stream, seq_num) of frames still waiting for their event."""
        return sorted(self._refs)


def frames_per_event(descriptor: dict) -> int:
    """Frames per event of the descriptor's (first) external image key."""
    for key in descriptor["data_keys"].values():
        if key.get("external") == "STREAM:":
            return int(key["shape"][0])
    raise MissingMetadataError(f"descriptor {descriptor['uid']} has no external (STREAM:) image key")


def detector_config(descriptor: dict) -> dict:
    """Model name (``*_model``), counter depth (``*_max_count``, counts) and frame
    exposure (``*_acquire_time``, s; None if absent) of the stream's area-detector
    configuration."""
    for config in descriptor.get("configuration", {}).values():
        data = config.get("data", {})
        model = next((v for k, v in data.items() if k.endswith("_model")), None)
        if model:
            def value(suffix):
                return next((v for k, v in data.items() if k.endswith(suffix)), None)
            return {"model": model, "max_count": value("_max_count"), "acquire_time": value("_acquire_time")}
    raise MissingMetadataError(f"descriptor {descriptor['uid']} has no detector configuration with a '*_model' key")


def stage_position(event: dict, stage_keys: dict[str, str]) -> StagePosition | None:
    """Detector-stage position (mm) read in ``event``; None if the run names no stage."""
    if not stage_keys:
        return None
    try:
        return StagePosition(*(float(event["data"][stage_keys[axis]]) for axis in ("x", "y", "distance")))
    except KeyError as exc:
        raise MissingMetadataError(f"stage motor reading {exc} missing from event {event['uid']}") from exc


def mean_dark(frame_events: list[FrameEvent]) -> np.ndarray:
    """Mean dark frame (counts per frame) of dark-stream events."""
    return np.concatenate([fe.frames for fe in frame_events]).astype(np.float64).mean(axis=0)
