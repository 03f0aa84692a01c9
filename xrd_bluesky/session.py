"""What ``xrd-bluesky session`` (IPython) and ``xrd-bluesky demo`` set up: the
catalog, a RunEngine, and :func:`~xrd_bluesky.beamline.attach` on it (raw writer,
analysis router, processed writer) for a beamline description; the simulated
beamline's devices when the description is the simulator's (the default).

With ``publish_to``, every document is also published through bluesky's 0MQ proxy
(:mod:`xrd_bluesky.zmq_link`), so that ``xrd-bluesky worker`` (:mod:`xrd_bluesky.worker`)
on another host analyses the runs live with the same router
(:func:`~xrd_bluesky.beamline.analysis_router`); the session then usually runs without
its own analysis (``analyse=False``). Raw data is recorded by the session's raw writer
either way, so no worker can lose it.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path

from bluesky import RunEngine

from .beamline import Attachment, BeamlineDescription, attach, load_beamline
from .callbacks import AnalysisRouter
from .science.gain_map_source import GainMapSource
from .science.geometry_source import GeometrySource
from .sim_devices import Beamline, BeamlineConfig, arm_config, make_beamline
from .store import Catalog, open_catalog
from .zmq_link import DocumentPublisher, zmq_endpoint

logger = logging.getLogger(__name__)


@dataclass
class Session:
    """A ready beamline session: the RunEngine, the attachment (catalog, live inputs,
    router, writers), the simulated devices when simulated (else None) and the
    publisher when publishing (else None)."""

    RE: RunEngine
    attachment: Attachment
    beamline: Beamline | None = None
    publisher: DocumentPublisher | None = None

    @property
    def catalog(self) -> Catalog:
        return self.attachment.catalog

    @property
    def description(self) -> BeamlineDescription:
        return self.attachment.beamline

    @property
    def router(self) -> AnalysisRouter | None:
        return self.attachment.router

    @property
    def writers(self):
        return self.attachment.writers

    def namespace(self) -> dict:
        """Names for an interactive session."""
        import bluesky.plan_stubs as bps
        import bluesky.plans as bp

        from . import plans

        devices = self.beamline.devices if self.beamline is not None else {}
        return {"RE": self.RE, "catalog": self.catalog, "raw": self.catalog.raw,
                "processed": self.catalog.processed, "beamline": self.description, "simulator": self.beamline,
                "bp": bp, "bps": bps, "plans": plans, "session": self, **devices}

    def use_calibration(self, uid: str | None) -> GeometrySource | None:
        """Pin the calibration that later analyses use (``None``: the latest good one)."""
        return self.attachment.use_calibration(uid)

    def current_geometry(self) -> GeometrySource | None:
        """See :meth:`~xrd_bluesky.beamline.Attachment.current_geometry`."""
        return self.attachment.current_geometry()

    def use_gain_map(self, uid: str | None) -> None:
        """Pin the gain map later integrations apply (``None``: the latest good one)."""
        self.attachment.use_gain_map(uid)

    def current_gain_map(self) -> GainMapSource | None:
        """See :meth:`~xrd_bluesky.beamline.LiveInputs.current_gain_map`."""
        return self.attachment.current_gain_map()

    def close(self) -> None:
        """Close the publisher, upload what the writers still hold (runs that cannot be
        stay in the spool for ``xrd-bluesky sync``) and stop the embedded server."""
        if self.publisher is not None:
            self.publisher.close()
        self.attachment.close()
        self.catalog.close()


def build_session(*, directory: str | Path | None = None, uri: str | None = None,
                  config: BeamlineConfig | None = None, beamline_file: str | Path | None = None,
                  plots: bool = False, publish_to: str | None = None, analyse: bool = True) -> Session:
    """Open the catalog, build the RunEngine, attach writers, publisher and router, and
    build the simulated beamline when the description is the simulator's.

    Live integration uses the current calibration (see :meth:`Session.current_geometry`);
    until one exists, the description's nominal geometry, labelled ``"nominal"``.
    While the catalog does not answer, runs are recorded (spooled) but not analysed
    live. Calibrations export PONI files to ``<data dir>/calibrations``. With
    ``plots``, peak fits are plotted live.

    Parameters
    ----------
    directory : path, optional
        Data directory (embedded catalog, frames, spool, exports).
    uri : str, optional
        A remote Tiled server (API key from ``TILED_API_KEY``); default embedded.
    config : BeamlineConfig, optional
        The simulated beamline (when no ``beamline_file`` is given).
    beamline_file : path, optional
        A beamline description: no simulated devices unless it says ``simulated = true``.
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
    BeamlineDescriptionError
        The description file is missing or invalid.
    """
    if publish_to is not None:
        publish_to = zmq_endpoint(publish_to)
    description = load_beamline(beamline_file) if beamline_file is not None else None
    simulated = description is None or description.simulated
    if simulated and config is None:
        if description is None:
            config = BeamlineConfig()
        elif description.detector().motion.kind == "arm":
            config = arm_config()
        else:
            config = BeamlineConfig(detector=description.detector().pyfai)
    catalog = open_catalog(uri, directory=directory, storage_roots=description.storage_roots if description else ())
    try:
        frames_dir = catalog.frames_dir if catalog.frames_dir is not None else Path(directory or ".") / "frames"
        simulator = make_beamline(config, data_dir=frames_dir) if simulated else None
        if simulator is not None:
            description = simulator.description
        RE = RunEngine({})
        publisher = None
        if publish_to is not None:  # before the router: a remote analysis need not wait for the local one
            publisher = DocumentPublisher(publish_to)
            RE.subscribe(publisher)
        attachment = attach(RE, description, catalog=catalog, analyse=analyse, plots=plots,
                            directory=frames_dir.parent)
    except BaseException:
        catalog.close()
        raise
    # pyFAI calls gc.collect() whenever a geometry changes; with a RunEngine and a
    # Tiled server loaded each call walks millions of objects. Freezing what exists
    # now (long-lived by nature) takes them out of every later collection.
    gc.freeze()
    return Session(RE, attachment, simulator, publisher)
