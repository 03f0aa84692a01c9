"""``xrd-bluesky lineage``: walk a run back to the raw runs it came from."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    """Add the ``lineage`` subcommand."""
    p = subparsers.add_parser("lineage", help="walk a run back to the raw runs it came from")
    p.add_argument("uid", help="uid of a raw or derived run")
    p.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    p.add_argument("--directory", help="data directory of the embedded catalog")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the run's lineage tree and the raw runs at its roots."""
    from ..schema.documents import check_uid
    from ..store import lineage, open_catalog

    check_uid(args.uid, "UID")
    catalog = open_catalog(args.catalog, directory=args.directory)
    try:
        tree = lineage(catalog, args.uid)
        print("\n".join(tree.lines()))
        print(f"raw runs: {', '.join(sorted(tree.raw_uids()))}")
    finally:
        catalog.close()
    return 0
