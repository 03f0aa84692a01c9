"""``xrd-bluesky worker``: analyse live, on this host, the runs a session publishes
through bluesky's 0MQ proxy (``xrd-bluesky session --publish HOST:PORT``).

Start the proxy (``bluesky-0MQ-proxy --in-address 5577 --out-address 5578``), the
session (``--publish PROXYHOST:5577 --no-analysis``) and the worker
(``--zmq PROXYHOST:5578 --catalog URI``). The worker prints a line when it listens,
logs each run it missed, and on Ctrl+C or SIGTERM prints the runs it missed, each to be
replayed with ``xrd-bluesky replay UID``. See :mod:`xrd_bluesky.worker`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    """Add the ``worker`` subcommand."""
    p = subparsers.add_parser("worker", help="analyse live the runs a session publishes through a 0MQ proxy "
                                             "(session --publish)")
    p.add_argument("--zmq", required=True, metavar="HOST:PORT",
                   help="output port of the bluesky-0MQ-proxy the session publishes to")
    p.add_argument("--catalog", required=True,
                   help="URI of the Tiled server the session records into (API key from TILED_API_KEY)")
    p.add_argument("--directory", help="this worker's data directory: spool of derived runs, exported PONI files "
                                       "and gain maps (default: $XRD_BLUESKY_DATA or the user data dir)")
    p.add_argument("--beamline", metavar="FILE",
                   help="the beamline description, as given to the session (default: the simulated beamline)")
    p.add_argument("--detector", default="Pilatus2MCdTe",
                   help="pyFAI detector model of the simulated beamline, as given to the session "
                        "(default: Pilatus2MCdTe; ignored with --beamline)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the worker until interrupted; print the runs it missed."""
    from ..beamline import load_beamline
    from ..sim_devices import BeamlineConfig
    from ..store import data_directory, open_catalog
    from ..worker import run_worker
    from ..zmq_link import zmq_endpoint

    address = zmq_endpoint(args.zmq)  # a bad address is reported before anything is opened
    directory = Path(args.directory) if args.directory else data_directory()
    beamline = (load_beamline(args.beamline) if args.beamline
                else BeamlineConfig(detector=args.detector).description())
    catalog = open_catalog(args.catalog, directory=directory)

    def listening() -> None:
        print(f"xrd-bluesky worker: listening to {address}, derived runs to {catalog.uri.split('?')[0]}; "
              "Ctrl+C to stop", flush=True)

    try:
        worker = run_worker(address, catalog, beamline, export_dir=directory,
                            on_listening=listening)
    finally:
        catalog.close()
    missed = list(worker.missed.values())
    print(f"xrd-bluesky worker: stopped; {len(missed)} missed run(s)" + (":" if missed else ""))
    for run in missed:
        print(f"  {run.uid}  {run.reason}; replay: xrd-bluesky replay {run.uid}")
    if worker.unattributed:
        print(f"  and {worker.unattributed} document(s) of a run in progress whose uid never arrived "
              "(its start, descriptors and stop all outside this worker's lifetime)")
    return 0
