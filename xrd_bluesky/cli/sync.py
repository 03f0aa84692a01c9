"""``xrd-bluesky sync``: back-fill the catalog with the spooled runs it is missing."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    """Add the ``sync`` subcommand."""
    p = subparsers.add_parser("sync", help="back-fill the catalog with spooled runs it is missing (idempotent)")
    p.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    p.add_argument("--directory", help="data directory (embedded catalog and spool)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Upload what the spool has and the catalog lacks; 1 when a run could not be."""
    from ..store import open_catalog
    from ..store.sync import sync

    catalog = open_catalog(args.catalog, directory=args.directory)
    try:
        report = sync(catalog, catalog.spool_dir)
    finally:
        catalog.close()
    print("\n".join(report.lines()))
    return 0 if report.ok else 1
