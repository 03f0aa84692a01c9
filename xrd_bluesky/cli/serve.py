"""``xrd-bluesky serve``: serve the catalog of a data directory over HTTP."""

from __future__ import annotations

import argparse

from .options import whole_number_in


def add_parser(subparsers) -> None:
    """Add the ``serve`` subcommand."""
    p = subparsers.add_parser("serve", help="serve the catalog of a data directory over HTTP (API key from "
                                            "TILED_API_KEY)")
    p.add_argument("--directory", help="data directory (default: $XRD_BLUESKY_DATA or the user data dir)")
    p.add_argument("--database", help="catalog database URI (default: SQLite and DuckDB in the directory); "
                                      "postgresql://user@host:port/db keeps the tables there too")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("--port", type=whole_number_in(1, 65535, "port"), default=8000, help="port (default: 8000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from ..store.catalog import data_directory
    from ..store.server import serve

    serve(args.directory or data_directory(), database=args.database, host=args.host, port=args.port)
    return 0
