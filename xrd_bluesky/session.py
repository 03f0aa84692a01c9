"""What ``xrd-bluesky session`` (IPython) and ``xrd-bluesky demo`` set up: the
catalog, the simulated beamline, a RunEngine with the raw writer (critical) and the
analysis router whose derived runs go to the processed writer.

With ``publish_to``, every document is also published through bluesky's 0MQ proxy
(:mod:`xrd_bluesky.zmq_link`), so that ``xrd-bluesky worker`` (:mod:`xrd_bluesky.worker`)
on another host analyses the runs live with the same router
(:func:`analysis_router`) and the same inputs (:class:`LiveInputs`); the session then
usually runs without its own analysis (``analyse=False``). Raw data is recorded by
the session's raw writer either way, so no worker can lose it.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from bluesky import RunEngine

from .callbacks import AnalysisRouter
from .callbacks.derived import Emit
from .science.absolute_scale import ReferencePattern
from .science.gain_map_source import GainMapSource
from .science.geometry import DetectorPositionModel
from .science.geometry_source import GeometrySource
from .science.peak_specs import PeakReference
from .sim_devices import Beamline, BeamlineConfig, make_beamline
from .store import Catalog, open_catalog
from .store.calibrations import geometry_from_calibration, latest_calibration
from .store.gain_maps import gain_map_from_run, latest_gain_map_uid
from .store.references import dark_frame, peak_reference, reference_pattern
from .store.writer import SpoolingWriter, catalog_writers
from .zmq_link import DocumentPublisher, zmq_endpoint

logger = logging.getLogger(__name__)


@dataclass
class LiveInputs:
    """What live analyses look up in the catalog when a run starts: the current
    calibration and gain map, and the reference, dark and d0 runs that a run names.

    Lookups check first that the catalog answers
    (:meth:`~xrd_bluesky.store.catalog.Catalog.online`); while it does not, runs are
    not analysed (the router logs why).

    Attributes
    ----------
    catalog : Catalog
        Where calibrations, gain maps and references are.
    fallback : callable
        The detector-position model used before any calibration exists: the
        simulated beamline's true geometry (labelled ``"simulator_truth"``).
    geometry : GeometrySource, optional
        A pinned calibration (None: the latest good one).
    gain_map_uid : str, optional
        A pinned gain map (None: the latest good one).
    """

    catalog: Catalog
    fallback: Callable[[], DetectorPositionModel]
    geometry: GeometrySource | None = None
    gain_map_uid: str | None = None
    _gain_map: GainMapSource | None = field(default=None, repr=False)

    def current_geometry(self) -> GeometrySource:
        """The pinned calibration, else the latest good one in the catalog, else
        :attr:`fallback` labelled ``"simulator_truth"``."""
        if self.geometry is not None:
            return self.geometry
        latest = latest_calibration(self.catalog.online().processed)
        if latest is not None:
            return latest
        return GeometrySource(self.fallback(), "simulator_truth")

    def current_gain_map(self) -> GainMapSource | None:
        """The pinned gain map, else the latest good one in the catalog, else None
        (arrays are read from the catalog once per uid)."""
        uid = self.gain_map_uid or latest_gain_map_uid(self.catalog.online().processed)
        if uid is None:
            return None
        if self._gain_map is None or self._gain_map.gain_map_uid != uid:
            self._gain_map = gain_map_from_run(self.catalog.online().processed[uid])
        return self._gain_map

    def reference_pattern(self, uid: str) -> ReferencePattern:
        """The stored absolute pattern of background or standard run ``uid``."""
        return reference_pattern(self.catalog.online().processed, uid)

    def dark_frame(self, uid: str) -> tuple[np.ndarray, float | None]:
        """Mean frame (counts) and frame exposure (s) of dark run ``uid``."""
        return dark_frame(self.catalog.online().raw, uid)

    def peak_reference(self, uid: str) -> PeakReference:
        """The d0 of peak-fit reference run ``uid``."""
        return peak_reference(self.catalog.online().processed, uid)


def analysis_router(inputs: LiveInputs, config: BeamlineConfig, emit: Emit, *, export_dir: str | Path,
                    **options) -> AnalysisRouter:
    """The live analysis router of a session or a worker: current inputs from the
    catalog (``inputs``), the beamline's nominal geometry, beamstop and flux
    calibration (``config``), derived documents to ``emit`` (a processed writer).

    Parameters
    ----------
    inputs : LiveInputs
        Calibration, gain map and reference lookups.
    config : BeamlineConfig
        The beamline: calibrations start from its nominal geometry.
    emit : callable
        Receives every derived document.
    export_dir : path
        Where calibrations export PONI files (``calibrations/``) and gain maps their
        images (``gain_maps/``).
    **options
        Further :class:`~xrd_bluesky.callbacks.AnalysisRouter` keywords (``plots``,
        ``provenance``).
    """
    return AnalysisRouter(emit, inputs.current_geometry, beamstop=config.beamstop,
                          nominal=config.nominal_geometry(), export_dir=export_dir,
                          gain_map=inputs.current_gain_map, references=inputs.reference_pattern,
                          darks=inputs.dark_frame, flux_calibration=config.flux_calibration,
                          peak_references=inputs.peak_reference, **options)


@dataclass
class Session:
    """A ready beamline session (``router`` is None when it does not analyse live,
    ``publisher`` None when it does not publish)."""

    RE: RunEngine
    catalog: Catalog
    beamline: Beamline
    inputs: LiveInputs
    router: AnalysisRouter | None = None
    writers: tuple[SpoolingWriter, ...] = ()
    publisher: DocumentPublisher | None = None

    def namespace(self) -> dict:
        """Names for an interactive session."""
        import bluesky.plan_stubs as bps
        import bluesky.plans as bp

        from . import plans

        return {"RE": self.RE, "catalog": self.catalog, "raw": self.catalog.raw,
                "processed": self.catalog.processed, "beamline": self.beamline,
                "bp": bp, "bps": bps, "plans": plans, "session": self, **self.beamline.devices}

    def use_calibration(self, uid: str | None) -> GeometrySource | None:
        """Pin the calibration that later analyses use (``None``: the latest good one)."""
        self.inputs.geometry = None if uid is None else geometry_from_calibration(self.catalog.processed[uid])
        return self.inputs.geometry

    def current_geometry(self) -> GeometrySource:
        """See :meth:`LiveInputs.current_geometry` (the fallback is the simulator's true
        geometry at the source's current energy)."""
        return self.inputs.current_geometry()

    def use_gain_map(self, uid: str | None) -> None:
        """Pin the gain map later integrations apply (``None``: the latest good one)."""
        self.inputs.gain_map_uid = uid

    def current_gain_map(self) -> GainMapSource | None:
        """See :meth:`LiveInputs.current_gain_map`."""
        return self.inputs.current_gain_map()

    def close(self) -> None:
        """Close the publisher, upload what the writers still hold (runs that cannot be
        stay in the spool for ``xrd-bluesky sync``) and stop the embedded server."""
        if self.publisher is not None:
            self.publisher.close()
        for writer in self.writers:
            writer.close()
        self.catalog.close()


def build_session(*, directory: str | Path | None = None, uri: str | None = None,
                  config: BeamlineConfig | None = None, plots: bool = False, publish_to: str | None = None,
                  analyse: bool = True) -> Session:
    """Open the catalog, build the simulated beamline and subscribe writers, publisher
    and router.

    Live integration uses the current calibration (see :meth:`Session.current_geometry`);
    until one exists, the simulator's true geometry, labelled ``"simulator_truth"``.
    While the catalog does not answer, runs are recorded (spooled) but not analysed
    live: their inputs (calibration, gain map, references) cannot be looked up.
    Calibrations start from the beamline's nominal geometry and export PONI files to
    ``<data dir>/calibrations``. With ``plots``, peak fits are plotted live.

    Parameters
    ----------
    directory : path, optional
        Data directory (embedded catalog, frames, spool, exports).
    uri : str, optional
        A remote Tiled server (API key from ``TILED_API_KEY``); default embedded.
    config : BeamlineConfig, optional
        The simulated beamline.
    plots : bool
        Plot peak fits live.
    publish_to : str, optional
        ``HOST:PORT`` of a bluesky 0MQ proxy's input port: every document is also
        published there (msgpack) for ``xrd-bluesky worker``. A publishing failure is
        logged and never stops a scan.
    analyse : bool
        Run the analysis router in this session; False when a worker analyses.
        Raw data is recorded either way.

    Raises
    ------
    ZmqLinkError
        ``publish_to`` is not ``HOST:PORT`` (checked before anything is opened).
    """
    if publish_to is not None:
        publish_to = zmq_endpoint(publish_to)
    catalog = open_catalog(uri, directory=directory)
    frames_dir = catalog.frames_dir if catalog.frames_dir is not None else Path(directory or ".") / "frames"
    beamline = make_beamline(config, data_dir=frames_dir)
    RE = RunEngine({})
    raw, processed = catalog_writers(catalog)
    RE.subscribe(raw)  # raw data is critical: a spool that cannot be written stops the scan
    session = Session(RE, catalog, beamline, LiveInputs(catalog, beamline.true_geometry), writers=(raw, processed))
    if publish_to is not None:  # before the router: a remote analysis need not wait for the local one
        session.publisher = DocumentPublisher(publish_to)
        RE.subscribe(session.publisher)
    if analyse:
        session.router = analysis_router(session.inputs, beamline.config, processed, export_dir=frames_dir.parent,
                                         plots=plots)
        RE.subscribe(session.router)
    # pyFAI calls gc.collect() whenever a geometry changes; with a RunEngine and a
    # Tiled server loaded each call walks millions of objects. Freezing what exists
    # now (long-lived by nature) takes them out of every later collection.
    gc.freeze()
    return session
