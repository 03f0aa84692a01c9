"""The file source: image files with their PONIs become runs in memory and go through
the same router as live data.

A :class:`FileRun` (frames read from files, each with its geometry, monitors, exposure
and saturation level; the sample's thickness; a dark) is turned into the documents of a
``measurement`` run (:func:`run_documents`, with :func:`event_model.compose_run`): the
start document has the package's keys (``purpose``, ``sample`` with ``thickness_mm``,
``energy_keV`` from the PONI's wavelength, ``image_key``, ``monitors``), the
descriptors have units on every data key and the detector's saturation level and frame
exposure in their configuration, and the events carry their frames inline. The
documents go through an :class:`~xrd_bluesky.callbacks.AnalysisRouter`
(:func:`analyse`), whose :class:`~xrd_bluesky.callbacks.integration.LiveIntegration`
makes the one integrated pattern of this package; the derived documents are collected
into a :class:`DerivedRun`.

Frames of one geometry are a fixed detector. Frames of several (one PONI per file,
e.g. a detector moved and calibrated at each position, or a 2theta arm's model at each
angle) are placed at the detector-"stage" position ``(i, i, i)`` of their geometry's
index ``i`` in the run (data key :data:`INDEX_KEY`, no unit of length: a key into the
run's table of PONIs, :class:`PoniTable`), so that the integration stitches them with
MultiGeometry's definition over the range all of them cover.

A background or a standard is a run of its own, analysed first; the measurement run
names it as live runs do (``background_uid``, ``standard_uid``), and the router looks
it up in memory (its final ``stitched_absolute`` pattern, :func:`reference_pattern`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from event_model import compose_run

from .. import errors
from ..callbacks import AnalysisRouter
from ..errors import (
    AnalysisError,
    GeometryError,
    InvalidFrameError,
    MissingMetadataError,
    XRDBlueskyError,
)
from ..schema import InstrumentSettings, RunSetup
from ..science.calibration.geometry_source import GeometrySource
from ..science.gain_map.source import GainMapSource
from ..science.geometry import Poni, StagePosition
from ..science.reduction.absolute_scale import ReferencePattern
from ..science.units import energy_keV

logger = logging.getLogger(__name__)

#: Image data key of the runs, and the name of their "detector" device.
IMAGE_KEY = "image"
DEVICE = "files"
#: Data key of a frame's geometry index when a run has several geometries.
INDEX_KEY = "poni_index"
#: Monitor data keys.
MONITOR_KEYS = {"i0": "i0", "it": "it"}


@dataclass(frozen=True)
class FileFrame:
    """One frame read from a file, with what the file source knows about it.

    Attributes
    ----------
    name : str
        Name of its outputs (the file's stem, ``<stem>_00001`` in a stack).
    source : str
        The file (and the frame's index in a stack), for messages.
    frame : ndarray
        Raw counts.
    poni : Poni
        Its geometry.
    i0, it : float, optional
        Upstream and downstream monitor counts during its exposure (counts).
    exposure_s : float, optional
        Its exposure (s).
    max_count : float, optional
        Counts at and above which a pixel is saturated.
    """

    name: str
    source: str
    frame: np.ndarray = field(repr=False)
    poni: Poni
    i0: float | None = None
    it: float | None = None
    exposure_s: float | None = None
    max_count: float | None = None


@dataclass(frozen=True)
class FileRun:
    """The frames of one sample (or background, or standard) and the run's facts.

    Attributes
    ----------
    frames : tuple of FileFrame
        In order.
    sample : str
        Sample name.
    thickness_mm : float, optional
        Sample thickness (mm).
    dark : ndarray, optional
        Dark counts of the frames' exposure.
    standard : str, optional
        For a standard run, the known standard it is (a key of
        :data:`~xrd_bluesky.science.reduction.absolute_scale.KNOWN_STANDARDS`).
    """

    frames: tuple[FileFrame, ...]
    sample: str
    thickness_mm: float | None = None
    dark: np.ndarray | None = field(default=None, repr=False)
    standard: str | None = None

    @property
    def ponis(self) -> list[Poni]:
        """The distinct geometries of the frames, in order of first use."""
        return list(dict.fromkeys(f.poni for f in self.frames))

    @property
    def has_monitors(self) -> bool:
        return any(f.i0 is not None or f.it is not None for f in self.frames)


@dataclass(frozen=True)
class PoniTable:
    """A detector-position model that is a table of PONIs: position ``(i, i, i)`` is
    the ``i``-th (see the module's description)."""

    ponis: tuple[Poni, ...]

    @property
    def reference(self) -> Poni:
        return self.ponis[0]

    def poni_at(self, position: StagePosition) -> Poni:
        return self.ponis[int(position.x)]

    def outside_calibrated_range(self, position: StagePosition) -> str | None:
        """None: every PONI is a calibration of its own position."""
        return None

    def as_dict(self) -> dict:
        return {"kind": "poni_table", "ponis": [p.as_dict() for p in self.ponis]}


def geometry_of(run: FileRun) -> GeometrySource:
    """The run's geometry: its one PONI (a fixed detector), or the table of its PONIs.

    Raises
    ------
    GeometryError
        The PONIs differ in wavelength (one run has one photon energy).
    """
    ponis = run.ponis
    wavelengths = sorted({p.wavelength for p in ponis})
    if len(wavelengths) > 1:
        raise GeometryError(f"the PONIs of {run.sample} give different wavelengths {wavelengths} m: the frames "
                            "of one pattern share one photon energy")
    if len(ponis) == 1:
        return GeometrySource.from_poni(ponis[0])
    return GeometrySource(PoniTable(tuple(ponis)), "poni_file")


# --------------------------------------------------------------------------- documents

def run_documents(run: FileRun, metadata: dict | None = None) -> list[tuple[str, dict]]:
    """The documents of ``run`` as a ``measurement`` run: start, a ``dark`` stream when
    it has a dark, ``primary`` events with the frames inline (one descriptor per
    detector configuration: saturation level and exposure), stop.

    Parameters
    ----------
    run : FileRun
        The frames and facts.
    metadata : dict, optional
        More start-document keys (``background_uid``, ``standard_uid``...).
    """
    ponis = run.ponis
    index = {poni: i for i, poni in enumerate(ponis)}
    sample = {"name": run.sample, **({} if run.thickness_mm is None else {"thickness_mm": run.thickness_mm})}
    start = {"purpose": "measurement", "sample": sample, "energy_keV": energy_keV(ponis[0].wavelength),
             "image_key": IMAGE_KEY, "detectors": [DEVICE], "plan_name": "file_source",
             "num_points": len(run.frames), "source_files": sorted({f.source for f in run.frames}),
             **({"monitors": MONITOR_KEYS} if run.has_monitors else {}),
             **({"standard": run.standard} if run.standard else {}), **(metadata or {})}
    if len(ponis) > 1:
        start.update(stage_motors={"x": INDEX_KEY, "y": INDEX_KEY, "distance": INDEX_KEY}, motors=[INDEX_KEY],
                     positions_mm=[[i, i, i] for i in range(len(ponis))])
    if run.dark is not None:
        start["dark_frames"] = 1
    bundle = compose_run(metadata=start)
    docs = [("start", bundle.start_doc)]
    shape = list(np.shape(run.frames[0].frame))
    if run.dark is not None:
        dark = bundle.compose_descriptor(name="dark", data_keys={IMAGE_KEY: _image_key(shape, run.dark)})
        docs += [("descriptor", dark.descriptor_doc), ("event", _event(dark, {IMAGE_KEY: run.dark}))]
    descriptors: dict[tuple, object] = {}
    for frame in run.frames:
        config = (frame.max_count, frame.exposure_s)
        if config not in descriptors:
            descriptors[config] = bundle.compose_descriptor(
                name="primary", data_keys=_data_keys(run, shape, frame.frame, len(ponis) > 1),
                configuration=_configuration(*config))
            docs.append(("descriptor", descriptors[config].descriptor_doc))
        data = {IMAGE_KEY: frame.frame}
        if run.has_monitors:
            data.update(i0=_number(frame.i0), it=_number(frame.it))
        if len(ponis) > 1:
            data[INDEX_KEY] = index[frame.poni]
        docs.append(("event", _event(descriptors[config], data)))
    docs.append(("stop", bundle.compose_stop(exit_status="success")))
    return docs


def _image_key(shape: list[int], frame: np.ndarray) -> dict:
    return {"dtype": "array", "dtype_numpy": np.asarray(frame).dtype.str, "shape": shape, "source": "file",
            "units": "counts", "object_name": DEVICE}


def _data_keys(run: FileRun, shape: list[int], frame: np.ndarray, indexed: bool) -> dict:
    keys = {IMAGE_KEY: _image_key(shape, frame)}
    if run.has_monitors:
        keys.update({key: {"dtype": "number", "shape": [], "source": "file", "units": "counts"}
                     for key in MONITOR_KEYS})
    if indexed:
        keys[INDEX_KEY] = {"dtype": "integer", "shape": [], "source": "file", "units": "index"}
    return keys


def _configuration(max_count: float | None, exposure_s: float | None) -> dict:
    """The detector's configuration: saturation level (counts) and frame exposure (s), where known."""
    values = {key: value for key, value in ((f"{DEVICE}_max_count", max_count), (f"{DEVICE}_acquire_time", exposure_s))
              if value is not None}
    units = {f"{DEVICE}_max_count": "counts", f"{DEVICE}_acquire_time": "s"}
    return {DEVICE: {"data": values, "timestamps": {k: time.time() for k in values},
                     "data_keys": {k: {"dtype": "number", "shape": [], "source": "file", "units": units[k]}
                                   for k in values}}}


def _event(descriptor, data: dict) -> dict:
    now = time.time()
    return descriptor.compose_event(data=data, timestamps={k: now for k in data})


def _number(value: float | None) -> float:
    return np.nan if value is None else float(value)


# --------------------------------------------------------------------------- analysis

@dataclass(frozen=True)
class DerivedRun:
    """The derived integration run of a file run, collected in memory.

    Attributes
    ----------
    raw_uid : str
        The file run's uid.
    start, stop : dict
        Its start and stop documents.
    streams : dict
        Per stream, the ``data`` of its events in order.
    """

    raw_uid: str
    start: dict
    stop: dict
    streams: dict[str, list[dict]]

    def last(self, stream: str) -> dict:
        """The data of the last event of ``stream`` (the final one of ``stitched``...)."""
        return self.streams[stream][-1]


def analyse(run: FileRun, *, npt: int, instrument: InstrumentSettings, gain_map: GainMapSource | None = None,
            references: dict[str, ReferencePattern] | None = None,
            metadata: dict | None = None) -> DerivedRun:
    """Route the documents of ``run`` through the live router and collect its integration.

    Parameters
    ----------
    run : FileRun
        The frames.
    npt : int
        Radial bins.
    instrument : InstrumentSettings
        Static mask, polarization factor, flux calibration...
    gain_map : GainMapSource, optional
        Frames are divided by its gain.
    references : dict, optional
        Background and standard patterns the run names in ``metadata``, by uid.
    metadata : dict, optional
        More start-document keys (``background_uid``, ``standard_uid``).

    Raises
    ------
    InvalidFrameError
        A frame without any usable pixel (its file named).
    XRDBlueskyError
        The integration failed: the error its derived run ends with (same class).
    """
    documents = run_documents(run, metadata)
    raw_uid = documents[0][1]["uid"]
    derived: list[tuple[str, dict]] = []
    geometry = geometry_of(run)
    lookup = dict(references or {})
    router = AnalysisRouter(lambda name, doc: derived.append((name, doc)), lambda detector_name: geometry,
                            setup=lambda start: RunSetup(start, instrument), npt=npt,
                            gain_map=lambda detector_name: gain_map, references=lookup.__getitem__)
    for name, doc in documents:
        router(name, doc)
    result = _collect(derived, raw_uid)
    rejected = result.streams.get("rejected")
    if rejected:
        first = rejected[0]
        raise InvalidFrameError(f"{run.frames[first['parent_seq_num'] - 1].source}: {first['reason']}")
    if result.stop.get("exit_status") != "success":
        raise _failure(result.stop.get("reason", ""))
    return result


def _collect(documents: list[tuple[str, dict]], raw_uid: str) -> DerivedRun:
    """The integration run made from ``raw_uid`` among the derived ``documents``."""
    start = next((doc for name, doc in documents if name == "start" and doc.get("parent_uids") == [raw_uid]
                  and doc.get("analysis") == "integration"), None)
    if start is None:
        raise AnalysisError(f"file run {raw_uid} was not integrated (see the log for why)")
    uid = start["uid"]
    stream_of: dict[str, str] = {}
    streams: dict[str, list[dict]] = {}
    stop: dict = {}
    for name, doc in documents:
        if name == "descriptor" and doc["run_start"] == uid:
            stream_of[doc["uid"]] = doc["name"]
        elif name == "event" and doc["descriptor"] in stream_of:
            streams.setdefault(stream_of[doc["descriptor"]], []).append(doc["data"])
        elif name == "stop" and doc["run_start"] == uid:
            stop = doc
    return DerivedRun(raw_uid, start, stop, streams)


def _failure(reason: str) -> XRDBlueskyError:
    """The domain error a derived run's ``reason`` (``"ClassName: message"``) names, or
    an :class:`AnalysisError` with the reason."""
    name, _, message = reason.partition(": ")
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, XRDBlueskyError):
        return kind(message)
    return AnalysisError(reason or "the integration ended without a reason")


def reference_pattern(derived: DerivedRun, what: str) -> ReferencePattern:
    """A background's or standard's pattern as the router looks it up: the final
    stitched pattern on the monitors' absolute scale (q in 1/nm, 1/cm/sr), its
    thickness and, for a standard, its factor (known / measured).

    Raises
    ------
    MissingMetadataError
        The run has no absolute pattern (``what`` and the reason named).
    """
    if "stitched_absolute" not in derived.streams:
        reasons = sorted({d["absolute_reason"] for d in derived.streams.get("primary", [])})
        raise MissingMetadataError(f"{what} has no absolute-scale pattern: {'; '.join(reasons)}")
    factor = float(derived.last("standard")["standard_factor"]) if "standard" in derived.streams else None
    return ReferencePattern.from_stitched(derived.raw_uid, derived.last("stitched_absolute"), factor)
