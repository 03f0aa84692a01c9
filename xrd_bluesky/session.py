"""What ``xrd-bluesky session`` (IPython) and ``xrd-bluesky demo`` set up: the
catalog, the simulated beamline, a RunEngine with the raw writer (critical) and the
analysis router whose derived runs go to the processed writer."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path

from bluesky import RunEngine

from .callbacks import AnalysisRouter
from .science.geometry_source import GeometrySource
from .sim_devices import Beamline, BeamlineConfig, make_beamline
from .store import Catalog, open_catalog
from .science.gain_map_source import GainMapSource
from .store.calibrations import geometry_from_calibration, latest_calibration
from .store.gain_maps import gain_map_from_run, latest_gain_map_uid
from .store.references import dark_frame, peak_reference, reference_pattern
from .store.writer import SpoolingWriter, catalog_writers

logger = logging.getLogger(__name__)


@dataclass
class Session:
    """A ready beamline session."""

    RE: RunEngine
    catalog: Catalog
    beamline: Beamline
    router: AnalysisRouter
    geometry: GeometrySource | None
    writers: tuple[SpoolingWriter, ...] = ()
    gain_map_uid: str | None = None
    _gain_map: GainMapSource | None = None

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
        self.geometry = None if uid is None else geometry_from_calibration(self.catalog.processed[uid])
        return self.geometry

    def current_geometry(self) -> GeometrySource:
        """The pinned calibration, else the latest good one in the catalog, else the
        simulator's true geometry (labelled ``"simulator_truth"``)."""
        if self.geometry is not None:
            return self.geometry
        latest = latest_calibration(self.catalog.online().processed)
        if latest is not None:
            return latest
        return GeometrySource(self.beamline.true_geometry(), "simulator_truth")

    def use_gain_map(self, uid: str | None) -> None:
        """Pin the gain map later integrations apply (``None``: the latest good one)."""
        self.gain_map_uid = uid

    def current_gain_map(self) -> GainMapSource | None:
        """The pinned gain map, else the latest good one in the catalog, else None
        (arrays are read from the catalog once per uid)."""
        uid = self.gain_map_uid or latest_gain_map_uid(self.catalog.online().processed)
        if uid is None:
            return None
        if self._gain_map is None or self._gain_map.gain_map_uid != uid:
            self._gain_map = gain_map_from_run(self.catalog.online().processed[uid])
        return self._gain_map

    def close(self) -> None:
        """Upload what the writers still hold (runs that cannot be stay in the spool for
        ``xrd-bluesky sync``) and stop the embedded server."""
        for writer in self.writers:
            writer.close()
        self.catalog.close()


def build_session(*, directory: str | Path | None = None, uri: str | None = None,
                  config: BeamlineConfig | None = None, plots: bool = False) -> Session:
    """Open the catalog, build the simulated beamline and subscribe writers and router.

    Live integration uses the current calibration (see :meth:`Session.current_geometry`);
    until one exists, the simulator's true geometry, labelled ``"simulator_truth"``.
    While the catalog does not answer, runs are recorded (spooled) but not analysed
    live: their inputs (calibration, gain map, references) cannot be looked up.
    Calibrations start from the beamline's nominal geometry and export PONI files to
    ``<data dir>/calibrations``. With ``plots``, peak fits are plotted live.
    """
    catalog = open_catalog(uri, directory=directory)
    frames_dir = catalog.frames_dir if catalog.frames_dir is not None else Path(directory or ".") / "frames"
    beamline = make_beamline(config, data_dir=frames_dir)
    RE = RunEngine({})
    raw, processed = catalog_writers(catalog)
    RE.subscribe(raw)  # raw data is critical: a spool that cannot be written stops the scan
    session = Session(RE, catalog, beamline, None, None, (raw, processed))  # type: ignore[arg-type]
    session.router = AnalysisRouter(processed, session.current_geometry, beamstop=beamline.config.beamstop,
                                    nominal=beamline.config.nominal_geometry(),
                                    export_dir=frames_dir.parent, gain_map=session.current_gain_map,
                                    references=lambda uid: reference_pattern(catalog.online().processed, uid),
                                    darks=lambda uid: dark_frame(catalog.online().raw, uid),
                                    flux_calibration=beamline.config.flux_calibration,
                                    peak_references=lambda uid: peak_reference(catalog.online().processed, uid),
                                    plots=plots)
    RE.subscribe(session.router)
    # pyFAI calls gc.collect() whenever a geometry changes; with a RunEngine and a
    # Tiled server loaded each call walks millions of objects. Freezing what exists
    # now (long-lived by nature) takes them out of every later collection.
    gc.freeze()
    return session
