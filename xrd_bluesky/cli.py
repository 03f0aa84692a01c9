"""The ``xrd-bluesky`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _demo(args) -> int:
    from .demo import run_demo

    result = run_demo(Path(args.output), directory=Path(args.directory) if args.directory else None,
                      detector=args.detector)
    return 0 if result["worst_ring_error_deg"] <= 0.02 else 1


def _session(args) -> int:
    import IPython

    from .session import build_session

    session = build_session(directory=Path(args.directory) if args.directory else None, uri=args.catalog)
    banner = ("xrd-bluesky session: RE, catalog (raw/processed), beamline devices "
              f"({', '.join(session.beamline.devices)}), plans, bp, bps are ready.")
    IPython.start_ipython(argv=[], user_ns=session.namespace(), display_banner=True,
                          config=_ipython_banner(banner))
    return 0


def _ipython_banner(text: str):
    from traitlets.config import Config

    config = Config()
    config.TerminalInteractiveShell.banner2 = text + "\n"
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xrd-bluesky", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the demo on the simulated beamline")
    demo.add_argument("--output", default="demo_output", help="folder for plots (default: demo_output)")
    demo.add_argument("--directory", help="data directory (default: $XRD_BLUESKY_DATA or the user data dir)")
    demo.add_argument("--detector", default="Pilatus2MCdTe", help="pyFAI detector model")
    demo.set_defaults(func=_demo)

    session = sub.add_parser("session", help="IPython with RE, devices, catalog and callbacks ready")
    session.add_argument("--directory", help="data directory of the embedded catalog")
    session.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    session.set_defaults(func=_session)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
