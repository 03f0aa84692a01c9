"""One router that dispatches each run to the analysis its ``purpose`` asks for.

Derived runs feed the next stage: an integration run whose raw run asked for
``peaks`` is fitted live (:class:`LivePeakFits`), one that asked for a ``pdf`` is turned
into pair distribution functions (:class:`LivePDF`), and both are plotted live when
``plots`` is on. Every derived document also goes to ``emit`` (the processed writer).

The router is an optional consumer: a failure to set up a run's analysis (a catalog
lookup of the current calibration or gain map that raises, say) is logged with its
traceback and leaves that run unanalysed; it never reaches the RunEngine
(:func:`~xrd_bluesky.isolation.isolated`). Replays (:mod:`xrd_bluesky.store.replay`) use
this same router.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from event_model import RunRouter

from ..errors import MissingMetadataError, XRDBlueskyError
from ..isolation import isolated
from ..schema import RunSetup
from ..schema.start import ANALYSIS_OF_PURPOSE, PURPOSE
from ..science.calibration.geometry_source import GeometrySource
from ..science.calibration.settings import CalibrationSettings
from ..science.gain_map.method import GainMapSettings
from ..science.gain_map.source import GainMapSource
from .calibration import GeometryCalibration
from .dark_frames import Darks
from .derived import DerivedRunCallback, Emit
from .energy import EnergyFromData
from .gain_map import GainMapBuilder
from .integration import LiveIntegration, References
from .pdf import LivePDF
from .pdf_plot import LivePDFPlot
from .peak_fits import LivePeakFits, PeakReferences
from .peak_plot import LivePeakPlot

logger = logging.getLogger(__name__)

#: ``(analysis, parent_start) -> extra start-document keys`` of a derived run.
Provenance = Callable[[str, dict], dict]
#: ``start_doc -> RunSetup``: the run completed from the beamline description.
Setup = Callable[[dict], RunSetup]


class AnalysisRouter(RunRouter):
    """Route every run to its live analysis; derived documents go to ``emit``.

    Parameters
    ----------
    emit : callable
        Receives every derived run's ``(name, doc)`` (e.g. the processed writer).
    geometry : callable
        ``geometry(detector_name)`` returns the current :class:`GeometrySource` of the
        run's detector (a pinned or the latest calibration, a PONI file) when a run
        starts, or None: then the run's nominal geometry (labelled ``nominal``) is
        used, and without one measurement and gain-map runs end ``fail`` saying so.
    setup : callable
        ``setup(start_doc)`` returns the run's :class:`~xrd_bluesky.schema.RunSetup`:
        its start document completed from the beamline description, the instrument
        settings and the nominal geometry calibrations start from (without one,
        calibration runs end ``fail`` saying so). Default: the run as it is, with
        default instrument settings and no nominal geometry.
    npt : int
        Radial bins of the integrations.
    export_dir : path, optional
        Where analyses export files: ``calibrations/`` (PONI files), ``gain_maps/``
        (TIFF/EDF).
    calibration_settings : CalibrationSettings
        Thresholds of the automatic calibration.
    gain_map : callable, optional
        Returns the current :class:`GainMapSource` (or None) when a run starts.
    references : callable, optional
        Looks up the stored absolute pattern of a background or standard run by uid.
    darks : callable, optional
        Looks up a dark run's mean frame and exposure by uid.
    cake : (int, int), optional
        ``(radial, azimuthal)`` bins of a per-frame cake of measurement runs.
    beamstop_margin_mm : float
        Margin (mm) by which the integrations grow the beamstop's shadow before masking it.
    gain_map_settings : GainMapSettings
        Parameters of the gain-map computation.
    peak_references : callable, optional
        Looks up a reference run's d0 by uid (the ``d0_uid`` of a peaks configuration).
    plots : bool
        Plot peak fits and PDFs live (a matplotlib figure per run).
    provenance : callable, optional
        ``provenance(analysis, parent_start)`` returns extra start-document keys for the
        derived run of ``analysis`` made from the run that ``parent_start`` opens (a
        raw run, or for chained analyses a derived one); replays mark their runs so.
    """

    def __init__(self, emit: Emit, geometry: Callable[[str | None], GeometrySource | None], *,
                 setup: Setup = RunSetup, npt: int = 2000, export_dir: str | Path | None = None,
                 calibration_settings: CalibrationSettings = CalibrationSettings(),
                 gain_map: Callable[[str | None], GainMapSource | None] = lambda detector_name: None,
                 references: References | None = None, darks: Darks | None = None, cake: tuple[int, int] | None = None,
                 beamstop_margin_mm: float = 0.5, gain_map_settings: GainMapSettings = GainMapSettings(),
                 peak_references: PeakReferences | None = None, plots: bool = False,
                 provenance: Provenance = lambda analysis, parent_start: {}):
        self.emit = emit
        self.geometry = geometry
        self.setup = setup
        self.npt = npt
        self.export_dir = export_dir
        self.calibration_settings = calibration_settings
        self.gain_map = gain_map
        self.references = references
        self.darks = darks
        self.cake = cake
        self.beamstop_margin_mm = beamstop_margin_mm
        self.gain_map_settings = gain_map_settings
        self.peak_references = peak_references
        self.plots = plots
        self.provenance = provenance
        self.plot_figures: list = []
        self._next_stage = RunRouter([isolated(_unanalysed)(self._derived_factory)])
        super().__init__([isolated(_unanalysed)(self._factory)])

    def _emit_derived(self, name: str, doc: dict) -> None:
        """A derived document goes to ``emit`` and to the analyses that build on it."""
        self.emit(name, doc)
        self._next_stage(name, doc)

    def _factory(self, name: str, start_doc: dict) -> tuple[list, list]:
        analysis = ANALYSIS_OF_PURPOSE.get(start_doc.get(PURPOSE))
        if analysis is None:
            return [], []
        try:
            setup = self.setup(start_doc)
        except XRDBlueskyError as exc:  # e.g. a detector the description does not know
            return [Refused(self._emit_derived, analysis, str(exc), self.provenance(analysis, start_doc))], []
        build = functools.partial(self._analysis, analysis, setup)
        if setup.energy_key and setup.start.get("energy_keV") is None:
            refuse = functools.partial(Refused, self._emit_derived, analysis,
                                       provenance=self.provenance(analysis, setup.start))
            return [EnergyFromData(build, refuse, setup.start, setup.energy_key, setup.keV_per_unit)], []
        return [_completed(build(setup.start), setup.start)], []

    def _analysis(self, analysis: str, setup: RunSetup, start: dict) -> DerivedRunCallback:
        """The callback of ``analysis`` for the run that ``start`` (completed) opens, or
        a :class:`Refused` one saying why it cannot run."""
        instrument, provenance = setup.instrument, self.provenance(analysis, start)
        if analysis == GeometryCalibration.analysis:
            if setup.nominal is None:
                return Refused(self._emit_derived, analysis, "no nominal geometry of this detector in the beamline "
                               "description: a calibration needs one to start from", provenance)
            return GeometryCalibration(self._emit_derived, setup.nominal, export_dir=self._export("calibrations"),
                                       instrument=instrument, settings=self.calibration_settings,
                                       provenance=provenance)
        geometry = self.geometry(start.get("detector_name"))
        if geometry is None and setup.nominal is not None:
            geometry = GeometrySource(setup.nominal, "nominal")
        reason = _unusable(geometry, start)
        if reason:
            return Refused(self._emit_derived, analysis, reason, provenance)
        if analysis == GainMapBuilder.analysis:
            return GainMapBuilder(self._emit_derived, geometry, instrument=instrument,
                                  export_dir=self._export("gain_maps"), settings=self.gain_map_settings,
                                  provenance=provenance)
        return LiveIntegration(self._emit_derived, geometry, npt=self.npt, instrument=instrument,
                               gain_map=self.gain_map(start.get("detector_name")), cake=self.cake,
                               beamstop_margin_mm=self.beamstop_margin_mm,
                               references=self.references, darks=self.darks, provenance=provenance)

    def _derived_factory(self, name: str, start_doc: dict) -> tuple[list, list]:
        analysis, callbacks = start_doc.get("analysis"), []
        if analysis == "integration" and "peaks" in start_doc:
            callbacks.append(LivePeakFits(self._emit_derived, references=self.peak_references,
                                          provenance=self.provenance(LivePeakFits.analysis, start_doc)))
        if analysis == "integration" and "pdf" in start_doc:
            callbacks.append(LivePDF(self._emit_derived, references=self.references,
                                     provenance=self.provenance(LivePDF.analysis, start_doc)))
        plot = {"peak_fits": LivePeakPlot, "pdf": LivePDFPlot}.get(analysis) if self.plots else None
        if plot is not None:
            callbacks.append(plot())
            self.plot_figures.append(callbacks[-1].figure)
        return callbacks, []

    def _export(self, kind: str) -> Path | None:
        return None if self.export_dir is None else Path(self.export_dir) / kind


class Refused(DerivedRunCallback):
    """The derived run of an analysis that cannot run: it ends ``fail`` with ``reason``
    at the parent's start (never silence, never a fallback)."""

    def __init__(self, emit: Emit, analysis: str, reason: str, provenance: dict | None = None):
        super().__init__(emit, provenance=provenance)
        self.analysis = analysis
        self.reason = reason

    def start(self, doc):
        raise MissingMetadataError(self.reason)


def _unusable(geometry: GeometrySource | None, start: dict) -> str:
    """Why ``geometry`` cannot analyse the run that ``start`` opens ("" if it can)."""
    if geometry is None:
        return ("no geometry: no calibration in the catalog and no nominal geometry in the beamline description; "
                "run a calibration scan or describe [detectors.NAME.nominal]")
    if geometry.label == "nominal" and start.get("energy_keV") is None:
        return ("no photon energy: the run's start document has no energy_keV and the beamline description "
                "gives no fixed [energy] keV, so the nominal geometry has no wavelength")
    return ""


def _completed(callback: Callable[[str, dict], object], start: dict) -> Callable[[str, dict], object]:
    """``callback``, given the completed start document ``start`` in place of the run's
    own (the other documents pass unchanged; nothing is mutated)."""

    def call(name: str, doc: dict):
        return callback(name, start if name == "start" else doc)

    return call


def _unanalysed(name: str, start_doc: dict, *, exc: Exception) -> tuple[list, list]:
    """The reaction to a factory's failure (see :func:`~xrd_bluesky.isolation.isolated`):
    logged with its traceback, the run is left unanalysed."""
    logger.exception("run %s (%s): setting up its analysis failed; the run is not analysed",
                     start_doc.get("uid"), start_doc.get("purpose") or start_doc.get("analysis"))
    return [], []
