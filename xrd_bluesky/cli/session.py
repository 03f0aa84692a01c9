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

import argparse
import gc
import logging
from dataclasses import dataclass
from pathlib import Path

from bluesky import RunEngine

from ..beamline import Attachment, BeamlineDescription, attach, load_beamline
from ..callbacks import AnalysisRouter
from ..science.calibration.geometry_source import GeometrySource
from ..science.gain_map.source import GainMapSource
from ..sim_devices import Beamline, BeamlineConfig, arm_config, make_beamline
from ..store import Catalog, open_catalog
from ..zmq_link import DocumentPublisher, zmq_endpoint

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

        from .. import plans

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


def add_parser(subparsers) -> None:
    """Add the ``session`` subcommand."""
    p = subparsers.add_parser("session", help="IPython with RE, devices, catalog and callbacks ready")
    p.add_argument("--directory", help="data directory of the embedded catalog")
    p.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    p.add_argument("--beamline", metavar="FILE",
                   help="beamline description (TOML): your devices are yours to create in the session; "
                        "no simulated devices unless the description says simulated = true")
    p.add_argument("--detector", default="Pilatus2MCdTe", help="pyFAI detector model of the simulated beamline")
    p.add_argument("--publish", metavar="HOST:PORT",
                   help="also publish every document to this bluesky-0MQ-proxy input port, for "
                        "`xrd-bluesky worker` on another host")
    p.add_argument("--no-analysis", dest="analysis", action="store_false",
                   help="do not analyse runs in this session (a worker does); raw data is recorded as always")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the session and start IPython in its namespace; close it on exit."""
    import IPython

    config = None if args.beamline else BeamlineConfig(detector=args.detector)
    session = build_session(directory=Path(args.directory) if args.directory else None, uri=args.catalog,
                            config=config, beamline_file=args.beamline, plots=True, publish_to=args.publish,
                            analyse=args.analysis)
    devices = (f"simulated devices ({', '.join(session.beamline.devices)}), " if session.beamline is not None
               else "")
    banner = (f"xrd-bluesky session at {session.description.name}: RE (attached: session), catalog "
              f"(raw/processed), beamline (the description), {devices}plans, bp, bps are ready.")
    if session.publisher is not None:
        banner += f"\nDocuments are published to {session.publisher.address} (for `xrd-bluesky worker`)."
    if session.router is None:
        banner += "\nRuns are recorded but not analysed in this session."
    try:
        IPython.start_ipython(argv=[], user_ns=session.namespace(), display_banner=True,
                              config=_ipython_banner(banner))
    finally:
        session.close()  # stops the embedded server's thread, which would keep the process alive
    return 0


def _ipython_banner(text: str):
    """IPython's configuration showing ``text`` under its own banner."""
    from traitlets.config import Config

    config = Config()
    config.TerminalInteractiveShell.banner2 = text + "\n"
    return config
