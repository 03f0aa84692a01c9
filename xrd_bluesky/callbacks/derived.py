"""Base class of analyses that turn a run's documents into a derived run.

An analysis failure is recorded in its derived run (``exit_status="fail"`` and the
reason) and logged with its traceback; it never propagates to the RunEngine, so it
never stops a scan (:func:`~xrd_bluesky.isolation.isolated`, whose debug switch lets it
through).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import numpy as np
from event_model import (
    ComposeDescriptorBundle,
    ComposeRunBundle,
    DocumentRouter,
    compose_run,
)

from .. import __version__
from ..frames import FrameRegistry
from ..isolation import isolated
from ..science.calibration.position_models import ArmPosition

logger = logging.getLogger(__name__)

Emit = Callable[[str, dict], None]


class DerivedRunCallback(DocumentRouter):
    """Turns one raw run into one derived run, emitted to ``emit(name, doc)``.

    Subclasses implement the document methods they need and call
    :meth:`open_derived` (usually from ``start``) and :meth:`finish` is called on
    the parent's stop. Documents are never mutated.

    Parameters
    ----------
    emit : callable
        Receives the derived run's ``(name, doc)``.
    provenance : dict, optional
        Extra start-document keys of the derived run (e.g. ``replay``, ``replay_of``).
    """

    analysis: str = "analysis"

    def __init__(self, emit: Emit, *, provenance: dict | None = None):
        super().__init__()
        self._emit = emit
        self.provenance = dict(provenance or {})
        self._bundle: ComposeRunBundle | None = None
        self._descriptors: dict[str, ComposeDescriptorBundle] = {}
        self._failed = False
        self._closed = False

    # -- derived-run lifecycle -------------------------------------------------
    def open_derived(self, parent_start: dict, parameters: dict, **provenance) -> ComposeRunBundle:
        """Emit the derived run's start document, naming parent, analysis,
        parameters and package version, plus the analysis' ``provenance`` keys and
        the callback's own (:attr:`provenance`)."""
        metadata = {
            "purpose": "derived",
            "analysis": self.analysis,
            "parameters": parameters,
            "parent_uids": [parent_start["uid"]],
            "parent_scan_id": parent_start.get("scan_id"),
            "xrd_bluesky_version": __version__,
            **{k: parent_start[k] for k in ("sample", "energy_keV", "calibrant", "detector_name", "image_key")
               if k in parent_start},
            **provenance,
            **self.provenance,
        }
        self._bundle = compose_run(metadata=metadata)
        self._emit("start", self._bundle.start_doc)
        return self._bundle

    def emit(self, name: str, doc: dict) -> None:
        """Send a document of the derived run downstream."""
        self._emit(name, doc)

    def emit_event(self, stream: str, data: dict, units: dict[str, str], *, seq_num: int | None = None,
                   configuration: dict | None = None) -> None:
        """Emit one event of the derived run's ``stream``; its descriptor (data keys with
        ``units[key]``, and ``configuration`` as ``{name: {key: value}}``) is emitted
        before the stream's first event."""
        if stream not in self._descriptors:
            config = {name: {"data": values, "timestamps": {k: time.time() for k in values},
                             "data_keys": data_keys(values, units)}
                      for name, values in (configuration or {}).items()}
            self._descriptors[stream] = self._bundle.compose_descriptor(
                name=stream, data_keys=data_keys(data, units), configuration=config)
            self.emit("descriptor", self._descriptors[stream].descriptor_doc)
        now = time.time()
        kw = {} if seq_num is None else {"seq_num": seq_num}
        self.emit("event", self._descriptors[stream].compose_event(data=data, timestamps={k: now for k in data}, **kw))

    def finish(self, parent_stop: dict) -> None:
        """Hook run when the parent run stops, before the derived run is closed."""

    def _close(self, exit_status: str, reason: str = "") -> None:
        if self._bundle is not None and not self._closed:
            self._closed = True
            self._emit("stop", self._bundle.compose_stop(exit_status=exit_status, reason=reason))

    # -- dispatch with isolation -------------------------------------------------
    def _end_failed(self, name: str, doc: dict, validate: bool = False, *, exc: Exception):
        """The reaction to a failure of the analysis (see :func:`~xrd_bluesky.isolation.isolated`):
        logged with its traceback, the derived run ends ``fail`` with the reason (one
        refused at its start is opened first, so that it says why) and the parent's
        later documents are ignored."""
        self._failed = True
        logger.exception("%s failed on a %r document of run %s", self.analysis, name,
                         doc.get("run_start") or doc.get("uid"))
        if name == "start" and self._bundle is None and "uid" in doc:
            self.open_derived(doc, {})
        self._close("fail", f"{type(exc).__name__}: {exc}")
        return name, doc

    @isolated(_end_failed)
    def __call__(self, name: str, doc: dict, validate: bool = False):
        if self._failed or self._closed:
            return name, doc
        if name == "stop":
            self.finish(doc)
            status = doc.get("exit_status", "success")
            self._close("success" if status == "success" else status,
                        "" if status == "success" else f"parent run ended {status}: {doc.get('reason', '')}")
            return name, doc
        return super().__call__(name, doc, validate)


class FrameRunCallback(DerivedRunCallback):
    """A derived-run callback that collects the parent run's frames.

    Descriptors, events, (Stream)Resources and (Stream)Datums (pages are unpacked by
    ``DocumentRouter``) go to
    ``self.frames`` (a :class:`~xrd_bluesky.frames.FrameRegistry`, whose image
    key is the start document's ``image_key`` when it names one);
    :meth:`frames_arrived` runs after each event or frame reference, for analyses that
    work frame by frame.

    Parameters
    ----------
    emit : callable
        Receives the derived run's ``(name, doc)``.
    provenance : dict, optional
        Extra start-document keys of the derived run.
    frame_options : mapping, optional
        Keywords of the frame registry: ``roots`` (storage roots), ``spec_aliases``,
        ``root_map``.
    """

    def __init__(self, emit: Emit, *, provenance: dict | None = None, frame_options: Mapping | None = None):
        super().__init__(emit, provenance=provenance)
        self.frames = FrameRegistry(**dict(frame_options or {}))

    def __call__(self, name: str, doc: dict, validate: bool = False):
        if name == "start" and isinstance(doc.get("image_key"), str):
            self.frames.requested_key = doc["image_key"]
        return super().__call__(name, doc, validate)

    def frames_arrived(self) -> None:
        """Hook: new events or frames are in ``self.frames``."""

    def descriptor(self, doc):
        self.frames.descriptor(doc)

    def stream_resource(self, doc):
        self.frames.stream_resource(doc)

    def resource(self, doc):
        self.frames.resource(doc)

    def datum(self, doc):
        self.frames.datum(doc)

    def event(self, doc):
        self.frames.event(doc)
        self.frames_arrived()

    def stream_datum(self, doc):
        self.frames.stream_datum(doc)
        self.frames_arrived()


def position_data(position) -> dict[str, float]:
    """A detector position as data keys: ``stage_x``, ``stage_y``, ``stage_distance``
    (mm) of a stage, ``arm_angle`` (deg) and ``arm_translation`` (mm) of an arm."""
    prefix = "arm" if isinstance(position, ArmPosition) else "stage"
    return {f"{prefix}_{axis}": value for axis, value in position.as_dict().items()}


def data_keys(data: dict, units: dict[str, str]) -> dict:
    """Descriptor data keys of an event's ``data``, with ``units[key]`` ("" if absent)."""
    keys = {}
    for name, value in data.items():
        if isinstance(value, np.ndarray):
            keys[name] = {"dtype": "array", "dtype_numpy": value.dtype.str, "shape": list(value.shape),
                          "source": "xrd_bluesky", "units": units.get(name, "")}
        else:
            dtype = {bool: "boolean", str: "string", int: "integer"}.get(type(value), "number")
            keys[name] = {"dtype": dtype, "shape": [], "source": "xrd_bluesky", "units": units.get(name, "")}
    return keys
