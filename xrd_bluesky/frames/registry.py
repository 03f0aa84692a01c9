"""The frame registry: pair each event of a run with its detector frames, whatever
the detector flavour and the document order.

Frames come as

- StreamResource / StreamDatum (ophyd-async, this package's simulator): frames per
  data key, several frames per event, HDF5 files still being written
  (:mod:`.stream`, :mod:`.hdf5`);
- Resource / Datum (ophyd v1 area detectors): the event holds a datum id, read
  through area-detector-handlers (:mod:`.resources`);
- arrays inline in the event (``ophyd.sim`` images, small detectors).

Paged documents (``event_page``, ``datum_page``) are unpacked. Live, references
arrive before their event; exported from a catalog (replay), all events of a stream
may come first: :class:`FrameRegistry` keeps both and hands out the pairs that are
complete. A frame that cannot be read is handed out with its ``error`` (file and
frame named) instead of frames, so the analysis flags that event and goes on.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from event_model import unpack_event_page

from ..errors import (
    CorruptFrameError,
    FrameSourceError,
    MissingMetadataError,
    ShapeMismatchError,
)
from ..schema.documents import document_field, document_uid
from ..science.calibration.position_models import ARM_AXES, ArmPosition
from ..science.geometry import STAGE_AXES, StagePosition
from ..science.reduction.monitors import positive
from .resources import ResourceFrames
from .stream import FrameSpan, StreamFrames

#: Errors of one frame's reading: they flag its event instead of ending the run.
FRAME_ERRORS = (CorruptFrameError, FrameSourceError, ShapeMismatchError)


@dataclass(frozen=True)
class FrameEvent:
    """One event with its frames (``(frames_per_event, rows, columns)`` counts), or
    with ``error`` (what could not be read, naming file and frame) and no frames."""

    stream: str
    seq_num: int
    event: dict
    descriptor: dict
    frames: np.ndarray | None
    error: str = ""


class FrameRegistry:
    """Collects the documents of one run and resolves its image references to frames.

    Every document method raises :class:`~xrd_bluesky.errors.MissingMetadataError`
    naming the document and key when a key it needs is missing or unusable.

    Parameters
    ----------
    image_key : str, optional
        The data key of the image; None: each stream's only image-like data key
        (an array of two or more dimensions), and an error naming the candidates when
        there are several.
    roots : sequence of Path
        Storage roots frame files must lie in (none: anywhere).
    spec_aliases : mapping, optional
        Beamline-specific resource spec -> known spec.
    root_map : mapping, optional
        Old resource root -> new root, for files moved since they were recorded.
    """

    def __init__(self, image_key: str | None = None, *, roots: Sequence[Path] = (),
                 spec_aliases: Mapping[str, str] | None = None, root_map: Mapping[str, str] | None = None) -> None:
        self.requested_key = image_key
        self._stream_frames = StreamFrames()
        self._resources = ResourceFrames(roots, spec_aliases, root_map)
        self._descriptors: dict[str, dict] = {}
        self._image_keys: dict[str, str] = {}
        self._events: dict[tuple[str, int], dict] = {}
        # per stream: announced frame spans of the image key, each with the sequence
        # numbers handed out; spans stay ranges (a replay announces all frames in one)
        self._spans: dict[str, list[tuple[FrameSpan, set[int]]]] = {}

    # -- documents ---------------------------------------------------------------------
    def descriptor(self, doc: dict) -> None:
        """Remember a descriptor (it needs a ``uid`` and a stream ``name``)."""
        what = f"descriptor {document_uid(doc)}"
        document_field(doc, "name", str, what)
        self._descriptors[document_field(doc, "uid", str, "descriptor")] = doc

    def stream_resource(self, doc: dict) -> None:
        """Remember a StreamResource (checked when a StreamDatum refers to it)."""
        self._stream_frames.stream_resource(doc)

    def stream_datum(self, doc: dict) -> None:
        """Keep the frames a StreamDatum (of a known descriptor) announces (only the
        image's are read: other datasets of the detector, e.g. a sum, are not)."""
        stream = self._stream(doc, f"stream_datum {document_uid(doc)}")
        self._spans.setdefault(stream, []).append((self._stream_frames.span(doc), set()))

    def resource(self, doc: dict) -> None:
        """Remember a Resource (ophyd v1)."""
        self._resources.resource(doc)

    def datum(self, doc: dict) -> None:
        """Remember a Datum (ophyd v1)."""
        self._resources.datum(doc)

    def datum_page(self, doc: dict) -> None:
        """Remember the Datums of a DatumPage."""
        self._resources.datum_page(doc)

    def event(self, doc: dict) -> None:
        """Keep an event (of a known descriptor, with an integer ``seq_num``) until its
        frames are known."""
        what = f"event {document_uid(doc)}"
        self._events[(self._stream(doc, what), document_field(doc, "seq_num", int, what))] = doc

    def event_page(self, doc: dict) -> None:
        """Keep the events of an EventPage."""
        for event in unpack_event_page(doc):
            self.event(event)

    def _stream(self, doc: dict, what: str) -> str:
        """Name of the stream of the descriptor that ``doc`` (``what``) refers to."""
        uid = document_field(doc, "descriptor", str, what)
        if uid not in self._descriptors:
            raise MissingMetadataError(f"{what} names descriptor {uid}, which has not arrived")
        return self._descriptors[uid]["name"]

    # -- the image key -----------------------------------------------------------------
    def image_key(self, descriptor: dict) -> str:
        """The image's data key in ``descriptor`` (see the class docstring).

        Raises
        ------
        MissingMetadataError
            The descriptor lacks the requested key, has no image-like key, or several
            (named) when none was requested.
        """
        uid = descriptor.get("uid")
        if uid in self._image_keys:
            return self._image_keys[uid]
        what = f"descriptor {document_uid(descriptor)} (stream {descriptor.get('name')!r})"
        keys = document_field(descriptor, "data_keys", dict, what)
        if self.requested_key is not None:
            if self.requested_key not in keys:
                raise MissingMetadataError(f"{what} has no image data key {self.requested_key!r}; its data keys: "
                                           f"{sorted(keys)}")
            key = self.requested_key
        else:
            candidates = [name for name, k in keys.items() if _image_like(k)]
            if len(candidates) != 1:
                raise MissingMetadataError(
                    f"{what} has {'no' if not candidates else 'several'} image data keys {candidates} among "
                    f"{sorted(keys)}: name the image_key in the beamline description or the run's metadata")
            key = candidates[0]
        self._image_keys[uid] = key
        return key

    # -- pairing -----------------------------------------------------------------------
    def ready(self, stream: str) -> list[FrameEvent]:
        """Pop every event of ``stream`` whose frames are known, in order, with its
        frames read (or the reading's error); a later StreamDatum announcing the same
        event's frames wins."""
        out = []
        for key in sorted(k for k in self._events if k[0] == stream):
            event = self._events[key]
            read = self._reader(stream, key[1], event)
            if read is None:
                continue  # its frames are not announced yet
            del self._events[key]
            desc = self._descriptors[event["descriptor"]]
            try:
                out.append(FrameEvent(stream, key[1], event, desc, read()))
            except FRAME_ERRORS as exc:
                out.append(FrameEvent(stream, key[1], event, desc, None, f"{type(exc).__name__}: {exc}"))
        images = set(self._image_keys.values())  # spans of other datasets are dropped once the image key is known
        self._spans[stream] = [(span, taken) for span, taken in self._spans.get(stream, [])
                               if len(taken) < span.n_events and (not images or span.data_key in images)]
        return out

    def _reader(self, stream: str, seq_num: int, event: dict) -> Callable[[], np.ndarray] | None:
        """What reads the frames of ``event`` (None while they are not announced):
        a StreamDatum span (taken for this event), a datum, or the event itself."""
        desc = self._descriptors[event["descriptor"]]
        image_key = self.image_key(desc)
        data_key = desc["data_keys"][image_key]
        external = data_key.get("external") if isinstance(data_key, Mapping) else None
        data = event.get("data")
        # STREAM: StreamDatum spans (ophyd-async); FILESTORE: a datum id in the event or, when a catalog
        # exports the run, StreamDatum spans (its writer converted the Resource and Datum documents)
        if isinstance(external, str) and (external.startswith("STREAM")
                                          or (external and isinstance(data, Mapping) and image_key not in data)):
            match = next(((span, taken) for span, taken in reversed(self._spans.get(stream, []))
                          if span.data_key == image_key and seq_num in span and seq_num not in taken), None)
            if match is None:
                return None
            span, taken = match
            taken.add(seq_num)
            return partial(span.ref(seq_num).read, frames_per_event(desc, image_key))
        if external:
            what = f"event {document_uid(event)}"
            datum_id = document_field(document_field(event, "data", dict, what), image_key, str, f"{what} data")
            return partial(self._resources.read, datum_id) if self._resources.knows(datum_id) else None
        return partial(inline_frames, event, image_key)

    def unmatched_frames(self) -> list[tuple[str, int, int]]:
        """(stream, first, last sequence number) of each run of announced image frames
        still waiting for their event."""
        runs = []
        for stream, spans in self._spans.items():
            for span, taken in spans:
                if self._image_keys and span.data_key not in self._image_keys.values():
                    continue  # another dataset of the detector (e.g. ophyd-async's sum)
                start = span.seq_start
                for seq_num in sorted(taken) + [span.seq_stop]:
                    if seq_num > start:
                        runs.append((stream, start, seq_num - 1))
                    start = seq_num + 1
        return sorted(runs)

    def waiting_events(self) -> list[tuple[str, int]]:
        """(stream, seq_num) of the events whose frames were never announced."""
        return sorted(self._events)


def _image_like(data_key: object) -> bool:
    """An array data key of two or more dimensions (frames, or a stack of them)."""
    if not isinstance(data_key, Mapping):
        return False
    shape = data_key.get("shape")
    return isinstance(shape, (list, tuple)) and len(shape) >= 2 and data_key.get("dtype") in ("array", None)


def inline_frames(event: dict, image_key: str) -> np.ndarray:
    """The image held in the event itself, as ``(frames, rows, columns)``.

    Raises
    ------
    MissingMetadataError
        The event has no such key.
    ShapeMismatchError
        The value is not a 2D image or a stack of them (shape named).
    """
    what = f"event {document_uid(event)}"
    data = document_field(event, "data", dict, what)
    if image_key not in data:
        raise MissingMetadataError(f"{what} has no image {image_key!r} in its data")
    try:
        frames = np.asarray(data[image_key])
    except (TypeError, ValueError) as exc:
        raise ShapeMismatchError(f"{what} image {image_key!r} is not an array: {exc}") from None
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    if frames.ndim != 3 or frames.dtype.kind not in "iuf" or 0 in frames.shape:
        raise ShapeMismatchError(f"{what} image {image_key!r} has shape {frames.shape} ({frames.dtype}); "
                                 "expected a 2D frame or a stack of frames of numbers")
    return frames


def frames_per_event(descriptor: dict, image_key: str) -> int:
    """Frames per event of a file-backed image key: the first entry of a 3-entry
    ``shape`` (``[frames, rows, columns]``), 1 for ``[rows, columns]``.

    Raises
    ------
    MissingMetadataError
        The key's ``shape`` is not a list of two or three whole numbers, or its frame
        count is not >= 1 (key and value named).
    """
    what = f"descriptor {document_uid(descriptor)}"
    keys = document_field(descriptor, "data_keys", dict, what)
    shape = document_field(document_field(keys, image_key, dict, what), "shape", list, f"{what} data key {image_key!r}")
    n = 1 if len(shape) == 2 else shape[0] if len(shape) == 3 else None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise MissingMetadataError(f"{what} data key {image_key!r} has shape {shape!r}: expected [rows, columns] "
                                   "or [frames per event >= 1, rows, columns]")
    return int(n)


#: Configuration keys of an area detector, matched at the end of a key after ``_``
#: (ophyd v1: ``det_cam_model``) or ``-`` (ophyd-async: ``det-driver-acquire_time``).
_CONFIG_KEYS = ("model", "max_count", "acquire_time")


def detector_config(descriptor: dict, image_key: str | None = None) -> dict:
    """Model string (``*model``; None if absent or empty), counter depth
    (``*max_count``, counts; None if absent or 0, which means unknown) and frame
    exposure (``*acquire_time``, s; None if absent) of the image's detector: the
    configuration of the device that owns ``image_key`` (its ``object_name``), else
    the first configuration naming any of them. Keys match after ``_`` (ophyd v1) or
    ``-`` (ophyd-async).

    Raises
    ------
    MissingMetadataError
        The model is not text, or the counter depth or exposure is not a positive
        finite number (key and value named).
    """
    what = f"descriptor {document_uid(descriptor)}"
    configuration = descriptor.get("configuration", {}) if isinstance(descriptor, Mapping) else {}
    if not isinstance(configuration, Mapping):
        configuration = {}
    keys = descriptor.get("data_keys", {}) if isinstance(descriptor, Mapping) else {}
    owner = keys.get(image_key, {}).get("object_name") if image_key and isinstance(keys, Mapping) \
        and isinstance(keys.get(image_key), Mapping) else None
    devices = [owner] if owner in configuration else list(configuration)
    for device in devices:
        config = configuration[device]
        data = config.get("data", {}) if isinstance(config, Mapping) else {}
        if not isinstance(data, Mapping):
            continue
        found = {name: _config_key(data, name) for name in _CONFIG_KEYS}
        if not any(found.values()):
            continue
        where = f"{what} configuration {device!r}"
        model_key = found["model"]
        model = None
        if model_key is not None and data[model_key] is not None and not _is_empty_text(data[model_key]):
            model = document_field(data, model_key, str, where).strip() or None
        out = {"model": model}
        for name, unit in (("max_count", "counts"), ("acquire_time", "s")):
            key = found[name]
            value = None if key is None or data[key] is None else positive(
                f"{where} {key}", data[key], unit, allow_zero=name == "max_count", error=MissingMetadataError)
            out[name] = None if value == 0 else value  # a counter depth of 0: unknown
        return out
    return {"model": None, "max_count": None, "acquire_time": None}


def _config_key(data: Mapping, suffix: str) -> str | None:
    pattern = re.compile(rf"(^|[_-]){suffix}$")
    return next((k for k in data if isinstance(k, str) and pattern.search(k)), None)


def stage_position(event: dict, stage_keys: Mapping[str, str] | None) -> StagePosition | None:
    """Detector-stage position (mm) read in ``event``; None if the run names no stage.

    Raises
    ------
    MissingMetadataError
        ``stage_keys`` is not a mapping or lacks an axis (``x``, ``y``, ``distance``),
        or the event lacks a reading of a stage motor or holds one that is not a finite
        number (motor and value named).
    """
    readings = _motor_readings(event, stage_keys, STAGE_AXES, "stage", "mm")
    return None if readings is None else StagePosition(*(readings[axis] for axis in STAGE_AXES))


def arm_position(event: dict, arm_keys: Mapping[str, str] | None) -> ArmPosition | None:
    """2theta-arm position read in ``event``: the arm's ``angle`` (deg) and, when the run
    names one, the ``translation`` it carries (mm); None if the run names no arm.

    Raises
    ------
    MissingMetadataError
        As :func:`stage_position`, for the run's ``arm_motors``.
    """
    axes = [axis for axis in ARM_AXES if axis == "angle" or isinstance(arm_keys, Mapping) and axis in arm_keys]
    readings = _motor_readings(event, arm_keys, axes, "arm", "deg, mm")
    return None if readings is None else ArmPosition(**readings)


def detector_position(event: dict, start: Mapping) -> StagePosition | ArmPosition | None:
    """Where the detector was for ``event``, from the motors the run's ``start``
    document names (``stage_motors`` or ``arm_motors``); None for a fixed detector.

    Raises
    ------
    MissingMetadataError
        The run names both a stage and an arm, or a reading is missing or not a number.
    """
    stage, arm = start.get("stage_motors"), start.get("arm_motors")
    if stage and arm:
        raise MissingMetadataError(f"the run names both stage_motors {stage!r} and arm_motors {arm!r}: "
                                   "a detector is on one mount")
    return arm_position(event, arm) if arm else stage_position(event, stage)


def planned_positions(start: Mapping) -> list[StagePosition | ArmPosition] | None:
    """The detector positions a run plans to visit (``positions_mm`` of a stage,
    ``arm_positions`` of an arm, in the order of its motors); None when not recorded.

    Raises
    ------
    MissingMetadataError
        A position is not a list of numbers, one per motor.
    """
    for key, motors_key, build in (("positions_mm", "stage_motors", StagePosition),
                                   ("arm_positions", "arm_motors", ArmPosition)):
        planned = start.get(key)
        if not planned:
            continue
        axes = list(document_field(start, motors_key, Mapping, "the run's start document"))
        try:
            return [build(**dict(zip(axes, map(float, position), strict=True))) for position in planned]
        except (TypeError, ValueError) as exc:
            raise MissingMetadataError(f"the run's {key} {planned!r} are not positions of its {motors_key} "
                                       f"{axes}: {exc}") from None
    return None


def _motor_readings(event: dict, keys: Mapping[str, str] | None, axes, mount: str, units: str) -> dict | None:
    """Readings (by axis) of the motors ``keys`` names for ``axes`` in ``event``; None
    when ``keys`` is None or empty (the run names no such ``mount``: stage, arm)."""
    role = f"{mount}_motors"
    if keys is None or isinstance(keys, Mapping) and not keys:
        return None
    if not isinstance(keys, Mapping):
        raise MissingMetadataError(f"the run's {role} {keys!r} is not a mapping of axis to motor name")
    what = f"event {document_uid(event)}"
    data = document_field(event, "data", dict, what)
    readings = {}
    for axis in axes:
        motor = document_field(keys, axis, str, f"the run's {role}")
        if motor not in data:
            raise MissingMetadataError(f"{mount} motor reading {motor!r} ({axis}) missing from {what}")
        value = data[motor]
        if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise MissingMetadataError(f"{mount} motor reading {motor}={value!r} ({axis}) of {what} "
                                       f"is not a finite number ({units})")
        readings[axis] = float(value)
    return readings


def mean_dark(frame_events: list[FrameEvent]) -> np.ndarray:
    """Mean dark frame (counts per frame) of dark-stream events.

    Raises
    ------
    MissingMetadataError
        No dark events.
    CorruptFrameError
        A dark frame could not be read (its error is named).
    ShapeMismatchError
        The events' frames differ in shape (sequence numbers named).
    """
    if not frame_events:
        raise MissingMetadataError("no dark frames to average")
    unread = [fe for fe in frame_events if fe.frames is None]
    if unread:
        raise CorruptFrameError(f"dark frame of seq_num {unread[0].seq_num} could not be read: {unread[0].error}")
    shapes = {fe.frames.shape[1:] for fe in frame_events}
    if len(shapes) > 1:
        raise ShapeMismatchError("dark frames differ in shape: " + ", ".join(
            f"seq_num {fe.seq_num} {fe.frames.shape[1:]}" for fe in frame_events))
    return np.concatenate([fe.frames for fe in frame_events]).astype(np.float64).mean(axis=0)


def _is_empty_text(value) -> bool:
    """True for the empty string (a model left blank); any other value, text or not, is not."""
    return isinstance(value, str) and value == ""
