"""One router that dispatches each run to the analysis its ``purpose`` asks for.

Derived runs feed the next stage: an integration run whose raw run asked for
``peaks`` is fitted live (:class:`LivePeakFits`), and peak fits are plotted live when
``plots`` is on. Every derived document also goes to ``emit`` (the processed writer).

The router is an optional consumer: a failure to set up a run's analysis (a catalog
lookup of the current calibration or gain map that raises, say) is logged with its
traceback and leaves that run unanalysed; it never reaches the RunEngine. Replays
(:mod:`xrd_bluesky.store.replay`) use this same router.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

from event_model import RunRouter

from ..science.calibration import CalibrationSettings
from ..science.gain_map_source import GainMapSource
from ..science.geometry import DetectorPositionModel
from ..science.geometry_source import GeometrySource
from ..science.image_formation import Beamstop
from ..science.monitors import FluxCalibration
from .calibration import GeometryCalibration
from .derived import Emit
from .gain_map import GainMapBuilder
from .integration import Darks, LiveIntegration, References
from .peak_fits import LivePeakFits, PeakReferences
from .peak_plot import LivePeakPlot

logger = logging.getLogger(__name__)

#: A RunRouter factory: ``(name, start_doc) -> (callbacks, subfactories)``.
Factory = Callable[[str, dict], tuple[list, list]]
#: ``(analysis, parent_start) -> extra start-document keys`` of a derived run.
Provenance = Callable[[str, dict], dict]


class AnalysisRouter(RunRouter):
    """Route every run to its live analysis; derived documents go to ``emit``.

    Parameters
    ----------
    emit : callable
        Receives every derived run's ``(name, doc)`` (e.g. the processed writer).
    geometry : callable
        Returns the current :class:`GeometrySource` (latest calibration, a PONI file,
        or the simulator's truth) when a run starts.
    beamstop : Beamstop, optional
        The beamline's beamstop, masked in integrations.
    npt : int
        Radial bins of the integrations.
    nominal : DetectorPositionModel, optional
        Nominal geometry that calibrations start from; without it calibration runs
        are not analysed.
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
    flux_calibration : FluxCalibration
        The I0 chamber's counts-to-flux calibration.
    peak_references : callable, optional
        Looks up a reference run's d0 by uid (the ``d0_uid`` of a peaks configuration).
    plots : bool
        Plot peak fits live (a matplotlib figure per run).
    provenance : callable, optional
        ``provenance(analysis, parent_start)`` returns extra start-document keys for the
        derived run of ``analysis`` made from the run that ``parent_start`` opens (a
        raw run, or for chained analyses a derived one); replays mark their runs so.
    """

    def __init__(self, emit: Emit, geometry: Callable[[], GeometrySource | None], *,
                 beamstop: Beamstop | None = None, npt: int = 2000,
                 nominal: DetectorPositionModel | None = None, export_dir: str | Path | None = None,
                 calibration_settings: CalibrationSettings = CalibrationSettings(),
                 gain_map: Callable[[], GainMapSource | None] = lambda: None,
                 references: References | None = None, darks: Darks | None = None, cake: tuple[int, int] | None = None,
                 flux_calibration: FluxCalibration = FluxCalibration(),
                 peak_references: PeakReferences | None = None, plots: bool = False,
                 provenance: Provenance = lambda analysis, parent_start: {}):
        self.emit = emit
        self.geometry = geometry
        self.beamstop = beamstop
        self.npt = npt
        self.nominal = nominal
        self.export_dir = export_dir
        self.calibration_settings = calibration_settings
        self.gain_map = gain_map
        self.references = references
        self.darks = darks
        self.cake = cake
        self.flux_calibration = flux_calibration
        self.peak_references = peak_references
        self.plots = plots
        self.provenance = provenance
        self.plot_figures: list = []
        self._next_stage = RunRouter([_isolated(self._derived_factory)])
        super().__init__([_isolated(self._factory)])

    def _emit_derived(self, name: str, doc: dict) -> None:
        """A derived document goes to ``emit`` and to the analyses that build on it."""
        self.emit(name, doc)
        self._next_stage(name, doc)

    def _factory(self, name: str, start_doc: dict) -> tuple[list, list]:
        purpose = start_doc.get("purpose")
        if purpose == "calibration":
            if self.nominal is None:
                logger.warning("run %s: no nominal geometry configured, not calibrated", start_doc["uid"])
                return [], []
            return [GeometryCalibration(self._emit_derived, self.nominal, export_dir=self._export("calibrations"),
                                        beamstop=self.beamstop, settings=self.calibration_settings,
                                        provenance=self.provenance(GeometryCalibration.analysis, start_doc))], []
        if purpose not in ("measurement", "gain_map"):
            return [], []
        geometry = self.geometry()
        if geometry is None:
            logger.warning("run %s: no geometry available, not analysed", start_doc["uid"])
            return [], []
        if purpose == "gain_map":
            return [GainMapBuilder(self._emit_derived, geometry, beamstop=self.beamstop,
                                   export_dir=self._export("gain_maps"),
                                   provenance=self.provenance(GainMapBuilder.analysis, start_doc))], []
        return [LiveIntegration(self._emit_derived, geometry, npt=self.npt, beamstop=self.beamstop,
                                gain_map=self.gain_map(), cake=self.cake, flux_calibration=self.flux_calibration,
                                references=self.references, darks=self.darks,
                                provenance=self.provenance(LiveIntegration.analysis, start_doc))], []

    def _derived_factory(self, name: str, start_doc: dict) -> tuple[list, list]:
        analysis = start_doc.get("analysis")
        if analysis == "integration" and "peaks" in start_doc:
            return [LivePeakFits(self._emit_derived, references=self.peak_references,
                                 provenance=self.provenance(LivePeakFits.analysis, start_doc))], []
        if analysis == "peak_fits" and self.plots:
            plot = LivePeakPlot()
            self.plot_figures.append(plot.figure)
            return [plot], []
        return [], []

    def _export(self, kind: str) -> Path | None:
        return None if self.export_dir is None else Path(self.export_dir) / kind


def _isolated(factory: Factory) -> Factory:
    """``factory``, with any exception it raises logged (with its traceback) and the
    run left unanalysed, so that it never reaches the RunEngine."""

    @functools.wraps(factory)
    def guarded(name: str, start_doc: dict) -> tuple[list, list]:
        try:
            return factory(name, start_doc)
        except Exception:  # an analysis that cannot be set up must not stop the scan
            logger.exception("run %s (%s): setting up its analysis failed; the run is not analysed",
                             start_doc.get("uid"), start_doc.get("purpose") or start_doc.get("analysis"))
            return [], []

    return guarded
