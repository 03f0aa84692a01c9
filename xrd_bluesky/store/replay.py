"""Replay a stored raw run through the live analyses into new derived runs.

The raw run's documents, rebuilt through the catalog's client
(:func:`~xrd_bluesky.sources.catalog_run.run_documents`), go through
an :class:`~xrd_bluesky.callbacks.AnalysisRouter`: the same router and callbacks, the
same code, as live. Every derived run a replay makes (chained peak fits too) is new:
its start document has ``replay: True`` and ``replay_of``, the uid of the live derived
run it redoes (None if there was none); nothing stored is overwritten, and replays never
become the current calibration or gain map nor a reference
(:func:`~xrd_bluesky.store.lineage.live_runs`).

By default a replay uses what the live analysis of the run used, as its derived start
document records it (its parameters: :mod:`xrd_bluesky.schema`): the geometry (model,
label, calibration uid), the gain map, the instrument (beamstop, mask, polarization
factor, flux calibration...), the radial and cake bins, the beamstop margin and, for a
calibration run, the nominal geometry and settings; background, standard, dark and d0
reference runs are looked up as live. ``calibration_uid`` / ``gain_map_uid`` name another
calibration or gain map (derived runs in ``catalog.processed``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as replaced
from functools import cached_property
from pathlib import Path
from typing import Any

from tiled.queries import Contains, Key

from ..callbacks import AnalysisRouter
from ..callbacks.derived import Emit
from ..errors import AmbiguousInputError, MissingMetadataError, XRDBlueskyError
from ..schema import InstrumentSettings, RunSetup
from ..schema.calibration import CalibrationParameters
from ..schema.gain_map import GainMapParameters
from ..schema.integration import IntegrationParameters
from ..schema.start import ANALYSIS_OF_PURPOSE, DETECTOR_NAME, IMAGE_KEY, MONITORS, PURPOSE
from ..science.calibration.geometry_source import GeometrySource
from ..science.calibration.position_models import position_model_from_dict
from ..sources.catalog_run import run_documents
from .calibrations import geometry_from_calibration
from .catalog import find_run
from .gain_maps import gain_map_from_run
from .lineage import REPLAY_KEY, REPLAY_OF_KEY, live_runs
from .references import dark_frame, peak_reference, reference_pattern
from .writer import processed_writer

logger = logging.getLogger(__name__)

#: The parameters each replayed analysis records.
PARAMETERS = {"calibration": CalibrationParameters, "gain_map": GainMapParameters,
              "integration": IntegrationParameters}
#: Start-document key of a derived run made from a run of another catalog: where that run is.
RAW_SOURCE_KEY = "raw_source"


@dataclass(frozen=True)
class RunSource:
    """Where the raw runs of a replay are, when not in the catalog's ``raw`` container:
    any Tiled catalog of Bluesky runs (its root or one of its containers), read and
    never written.

    Attributes
    ----------
    container : tiled Container
        The node holding the runs.
    label : str
        The catalog's URI and the container's path (recorded in the derived runs).
    frames : str
        How frames are read (:data:`~xrd_bluesky.sources.catalog_run.FRAME_MODES`).
    """

    container: Any
    label: str
    frames: str = "auto"


@dataclass(frozen=True)
class RunCompletion:
    """What a run recorded by other software lacks, given by the user.

    Attributes
    ----------
    start : mapping
        Start-document keys (``purpose``, ``image_key``, ``calibrant``...) for a run
        that has none; a run that says otherwise is refused (AmbiguousInputError).
    setup : callable, optional
        A beamline description's ``run_setup``: the image, motor and monitor keys,
        instrument and nominal geometry of the run's detector.
    geometry : GeometrySource, optional
        The geometry to integrate with (a PONI file): it replaces the recorded live
        analysis's geometry and the description's nominal one; only a named
        calibration (``calibration_uid``) wins over it.
    mask : ndarray, optional
        A static mask (True = bad) replacing the instrument's.
    mask_file : str, optional
        The file it came from (recorded).
    """

    start: Mapping = field(default_factory=dict)
    setup: Callable[[Mapping], RunSetup] | None = None
    geometry: GeometrySource | None = None
    mask: Any = field(default=None, compare=False)
    mask_file: str | None = None

    @property
    def given(self) -> bool:
        """Whether the user gave anything."""
        return bool(self.start) or any(v is not None for v in (self.setup, self.geometry, self.mask))

    def completed(self, start: Mapping) -> dict:
        """``start`` with the keys it lacks.

        Raises
        ------
        AmbiguousInputError
            The run's start document says otherwise than a key given.
        """
        for key, value in self.start.items():
            if key in start and start[key] != value:
                raise AmbiguousInputError(f"run {start.get('uid')} says {key} = {start[key]!r}, the replay was told "
                                          f"{value!r}: drop the option, or replay another run")
        return {**self.start, **start}


@dataclass(frozen=True)
class ReplayedRun:
    """A derived run made by a replay.

    Attributes
    ----------
    uid : str
        Its uid (new).
    analysis : str
        ``integration``, ``peak_fits``, ``calibration`` or ``gain_map``.
    replay_of : str or None
        The live derived run it redoes.
    exit_status : str
        ``success``, ``fail``... (``""`` if it never stopped).
    reason : str
        Why it failed, if it did.
    """

    uid: str
    analysis: str
    replay_of: str | None
    exit_status: str
    reason: str


def replay(catalog, uid: str, *, calibration_uid: str | None = None, gain_map_uid: str | None = None,
           emit: Emit | None = None, export_dir: str | Path | None = None, source: RunSource | None = None,
           completion: RunCompletion = RunCompletion()) -> list[ReplayedRun]:
    """Run the stored raw run ``uid`` through the live analyses again.

    Parameters
    ----------
    catalog : Catalog
        The catalog (:func:`~xrd_bluesky.store.open_catalog`) holding the raw run (unless
        ``source`` is given), the derived runs it names, and the new ones.
    uid : str
        The raw run (a calibration, gain-map or measurement run).
    calibration_uid : str, optional
        A derived calibration run whose geometry replaces the recorded one
        (measurement and gain-map runs).
    gain_map_uid : str, optional
        A derived gain-map run that replaces the recorded gain map (measurement runs).
    emit : callable, optional
        Receives the new derived runs' documents (default: the catalog's processed
        writer, :func:`~xrd_bluesky.store.writer.processed_writer`, closed at the end).
    export_dir : path, optional
        Where a replayed calibration or gain map exports its files (``calibrations/``,
        ``gain_maps/``); default the embedded catalog's data directory, none for a
        remote catalog.
    source : RunSource, optional
        Another catalog holding the raw run (read only; its dark runs are looked up
        there too). Frames are then read in place when readable here.
    completion : RunCompletion, optional
        What the run lacks (purpose, image key, geometry...), for runs recorded by other
        software.

    Returns
    -------
    list of ReplayedRun
        The new derived runs, in the order they started.

    Raises
    ------
    MissingMetadataError
        ``uid`` or an override is not a run uid (``UnsafeUidError``) or not in the
        catalog, ``uid`` is not a raw run, its purpose has no analysis, an override does
        not apply to it, or what the replay needs was never recorded nor given.
    AmbiguousInputError
        The run says otherwise than ``completion``.
    CorruptFrameError
        A frames file of a run of this catalog is gone (or not a local file).
    """
    raw = catalog.raw if source is None else source.container
    where = "the catalog" if source is None else source.label
    run = _run(raw, uid, "raw run", derived=catalog.processed if source is None else None, where=where)
    start = completion.completed(run.start)
    uid = start["uid"]
    analysis = _analysis(start, calibration_uid, gain_map_uid)
    documents = run_documents(run, where, "files" if source is None else source.frames)
    live = _live_derived(catalog.processed, uid, analysis)
    recorded = dict(live.start) if live is not None else {}
    writer = processed_writer(catalog) if emit is None else None
    made = _Made(emit if emit is not None else writer)
    if export_dir is None and catalog.frames_dir is not None:
        export_dir = catalog.frames_dir.parent
    inputs = _Inputs(catalog, raw, start, analysis, recorded, completion, None if source is None else source.label)
    router = _router(inputs, made, calibration_uid, gain_map_uid, export_dir)
    try:
        for name, doc in documents:
            router(name, start if name == "start" else doc)
    finally:
        if writer is not None:
            writer.close()
    if not made.starts:
        raise XRDBlueskyError(f"replay of run {uid} made no derived run (see the log for why)")
    runs = made.runs()
    if calibration_uid is None:
        _warn_changed_parameters(catalog.processed, made.starts)
    return runs


@dataclass(frozen=True)
class _Inputs:
    """What a replay's router is set up from: the catalog (derived runs), the raw runs'
    container, the run, its analysis, the live record, what the user gave and, for a run
    of another catalog, where it is (None: this catalog)."""

    catalog: Any
    raw: Any
    start: dict
    analysis: str
    recorded: dict
    completion: RunCompletion
    source_label: str | None

    @property
    def uid(self) -> str:
        return self.start["uid"]

    @cached_property
    def parameters(self) -> CalibrationParameters | GainMapParameters | IntegrationParameters | None:
        """The live analysis's parameters, as recorded (None: no live analysis, or one
        that recorded none, refused at its start)."""
        recorded = self.recorded.get("parameters")
        return PARAMETERS[self.analysis].from_dict(recorded) if recorded else None


class _Made:
    """Passes the replay's documents on to ``emit`` and keeps its start and stop documents."""

    def __init__(self, emit: Emit):
        self.emit = emit
        self.starts: dict[str, dict] = {}
        self.stops: dict[str, dict] = {}

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self.starts[doc["uid"]] = doc
        elif name == "stop":
            self.stops[doc["run_start"]] = doc
        self.emit(name, doc)

    def runs(self) -> list[ReplayedRun]:
        return [ReplayedRun(uid, start["analysis"], start[REPLAY_OF_KEY],
                            self.stops.get(uid, {}).get("exit_status", ""), self.stops.get(uid, {}).get("reason", ""))
                for uid, start in self.starts.items()]


def _run(container, uid: str, what: str, derived=None, where: str = "the catalog"):
    """Run ``uid`` (or a partial uid) of ``container``; MissingMetadataError naming it
    if it is not a run uid or absent (saying so when it is a derived run of ``derived``
    instead)."""
    run = find_run(container, uid, what)
    if run is not None:
        return run
    other = None if derived is None else find_run(derived, uid, what)
    if other is not None:
        start = other.start
        raise MissingMetadataError(f"run {uid} is a derived run ({start.get('analysis')}), not a raw run; "
                                   f"replay its raw run(s) {start.get('raw_uids') or start.get('parent_uids')}")
    raise MissingMetadataError(f"{what} {uid} is not in {where}")


def _analysis(start: dict, calibration_uid: str | None, gain_map_uid: str | None) -> str:
    """The analysis a raw run is replayed through, after checking the overrides apply."""
    uid, purpose = start["uid"], start.get(PURPOSE)
    analysis = ANALYSIS_OF_PURPOSE.get(purpose)
    if analysis is None:
        raise MissingMetadataError(f"run {uid} has purpose {purpose!r}: nothing to replay "
                                   f"(replayable purposes: {', '.join(ANALYSIS_OF_PURPOSE)}; give --purpose "
                                   "for a run recorded without one)")
    if calibration_uid is not None and analysis == "calibration":
        raise MissingMetadataError(f"run {uid} is a calibration run, refined from its nominal geometry: "
                                   "another calibration does not apply to it")
    if gain_map_uid is not None and analysis != "integration":
        raise MissingMetadataError(f"run {uid} is a {purpose} run: a gain map applies to measurement runs only")
    return analysis


def _live_derived(processed, parent_uid: str, analysis: str):
    """The newest derived run of ``analysis`` made live from run ``parent_uid``, or None."""
    runs = live_runs(processed).search(Contains("parent_uids", parent_uid)).search(Key("analysis") == analysis)
    newest = runs.values().tail(1)  # one page, not a listing of every match
    return newest[0] if newest else None


def _router(inputs: _Inputs, emit: Emit, calibration_uid: str | None, gain_map_uid: str | None,
            export_dir: str | Path | None) -> AnalysisRouter:
    """The live router, set up with what the live analysis recorded (its derived start
    document; empty if there was none), what the user gave and the overrides."""
    processed, recorded = inputs.catalog.processed, inputs.parameters
    options: dict = {}
    if isinstance(recorded, IntegrationParameters):
        options.update(npt=recorded.npt, cake=recorded.cake, beamstop_margin_mm=recorded.beamstop_margin_mm)
    elif isinstance(recorded, CalibrationParameters):
        options["calibration_settings"] = recorded.settings
    elif isinstance(recorded, GainMapParameters):
        options["gain_map_settings"] = recorded.settings
    setup = _setup(inputs)
    geometry = None if inputs.analysis == "calibration" else _geometry(inputs, calibration_uid, setup)
    gain_uid = gain_map_uid or inputs.recorded.get("gain_map_uid")
    gain_map = None if gain_uid is None else gain_map_from_run(_run(processed, gain_uid, "gain map"))

    def provenance(analysis: str, parent_start: dict) -> dict:
        parent = parent_start.get(REPLAY_OF_KEY) if parent_start.get(REPLAY_KEY) else parent_start["uid"]
        live = None if parent is None else _live_derived(processed, parent, analysis)
        where = {} if inputs.source_label is None else {RAW_SOURCE_KEY: inputs.source_label}
        return {REPLAY_KEY: True, REPLAY_OF_KEY: None if live is None else live.start["uid"], **where}

    return AnalysisRouter(emit, lambda detector_name: geometry, setup=setup,
                          gain_map=lambda detector_name: gain_map, export_dir=export_dir,
                          references=lambda ref: reference_pattern(processed, ref),
                          darks=lambda dark: dark_frame(inputs.raw, dark),
                          peak_references=lambda ref: peak_reference(processed, ref),
                          provenance=provenance, **options)


def _setup(inputs: _Inputs) -> Callable[[Mapping], RunSetup]:
    """How the router completes the run's start document: from the live record (what
    the live router took from the beamline description), else from the description and
    the user's options; the user's mask replaces the instrument's.

    Raises
    ------
    MissingMetadataError
        A calibration run with neither a live calibration recording its nominal geometry
        nor a nominal geometry given (a PONI file or a beamline description).
    """
    recorded, completion = inputs.parameters, inputs.completion
    nominal = None
    if isinstance(recorded, CalibrationParameters):
        nominal = recorded.nominal
    elif completion.geometry is not None:
        nominal = completion.geometry.model

    if inputs.recorded or completion.setup is None:
        # nothing recorded (a run of another catalog, without a description): no flux calibration, no absolute scale
        instrument = InstrumentSettings(flux_calibration=None) if recorded is None else recorded.instrument
        described = {**_described(recorded),
                     **{key: inputs.recorded[key] for key in (DETECTOR_NAME, IMAGE_KEY) if inputs.recorded.get(key)}}

        def setup(start: Mapping) -> RunSetup:
            return _with_mask(RunSetup({**described, **start}, instrument, nominal), completion)
    else:
        def setup(start: Mapping) -> RunSetup:
            run = completion.setup(start)
            return _with_mask(replaced(run, nominal=nominal or run.nominal), completion)

    if inputs.analysis == "calibration" and nominal is None and completion.setup is None:
        raise MissingMetadataError(f"calibration run {inputs.uid} has no live calibration recording its nominal "
                                   "geometry: give one (--poni FILE or --beamline FILE) to replay it")
    return setup


def _with_mask(run: RunSetup, completion: RunCompletion) -> RunSetup:
    """``run`` with the user's mask, if one was given."""
    if completion.mask is None:
        return run
    return replaced(run, instrument=replaced(run.instrument, mask=completion.mask, mask_file=completion.mask_file))


def _described(recorded: CalibrationParameters | GainMapParameters | IntegrationParameters | None) -> dict:
    """The start-document keys the live analysis took from the beamline description
    (its image key, and an integration's monitors), as it recorded them."""
    if recorded is None:
        return {}
    keys = {IMAGE_KEY: recorded.image_key, MONITORS: getattr(recorded, "monitors", None)}
    return {key: value for key, value in keys.items() if value}


def _geometry(inputs: _Inputs, calibration_uid: str | None, setup: Callable[[Mapping], RunSetup]) -> GeometrySource:
    """The calibration named by ``calibration_uid``, else the geometry the user gave (a
    PONI file), else the one the live analysis recorded (its model, label, calibration
    uid and stage following), else the beamline description's nominal geometry.

    Raises
    ------
    MissingMetadataError
        None of them: the ways to give one are named.
    """
    if calibration_uid is not None:
        return geometry_from_calibration(_run(inputs.catalog.processed, calibration_uid, "calibration"))
    if inputs.completion.geometry is not None:
        return inputs.completion.geometry
    geometry = inputs.recorded.get("geometry")
    if geometry is not None:
        return GeometrySource(position_model_from_dict(geometry["model"]), geometry["source"],
                              calibration_uid=geometry.get("calibration_uid"),
                              follows_stage=geometry.get("follows_stage", True))
    if inputs.completion.setup is not None:
        nominal = setup(inputs.start).nominal
        if nominal is not None:
            return GeometrySource(nominal, "nominal")
    raise MissingMetadataError(f"run {inputs.uid} has no live analysis recording its geometry: give one "
                               "(--poni FILE, --calibration UID, or a --beamline description with a nominal geometry)")


def _warn_changed_parameters(processed, starts: dict[str, dict]) -> None:
    """Log the replayed runs whose parameters differ from those of the live run they
    redo (this package's defaults changed since)."""
    for uid, start in starts.items():
        if start[REPLAY_OF_KEY] is None:
            continue
        live = processed[start[REPLAY_OF_KEY]].start
        changed = sorted(k for k in set(live["parameters"]) | set(start["parameters"])
                         if live["parameters"].get(k) != start["parameters"].get(k))
        if changed:
            logger.warning("replay %s of %s %s (version %s) ran with other parameters than live (version %s): %s",
                           uid, start["analysis"], start[REPLAY_OF_KEY], start["xrd_bluesky_version"],
                           live.get("xrd_bluesky_version"), ", ".join(changed))
