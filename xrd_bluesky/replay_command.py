"""``xrd-bluesky replay``: run a stored raw run through the live analyses again.

The new derived runs (marked ``replay: True``, with ``replay_of`` naming the live run
they redo) go to the catalog's ``processed`` container; nothing is overwritten. See
:mod:`xrd_bluesky.store.replay`.
"""

from __future__ import annotations

import argparse

from .store import open_catalog
from .store.replay import replay


def add_parser(subparsers) -> None:
    """Add the ``replay`` subcommand."""
    p = subparsers.add_parser("replay", help="replay a stored raw run through the live analyses into new derived runs")
    p.add_argument("uid", help="uid of a raw calibration, gain-map or measurement run")
    p.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    p.add_argument("--directory", help="data directory of the embedded catalog")
    p.add_argument("--calibration", metavar="UID",
                   help="derived calibration run to use instead of the geometry the live analysis used")
    p.add_argument("--gain-map", dest="gain_map", metavar="UID",
                   help="derived gain-map run to use instead of the one the live analysis used")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay ``args.uid`` in the catalog the arguments name (see :func:`replay_and_print`)."""
    catalog = open_catalog(args.catalog, directory=args.directory)
    try:
        return replay_and_print(catalog, args.uid, calibration_uid=args.calibration, gain_map_uid=args.gain_map)
    finally:
        catalog.close()


def replay_and_print(catalog, uid: str, *, calibration_uid: str | None = None,
                     gain_map_uid: str | None = None) -> int:
    """Replay raw run ``uid`` of ``catalog`` and print one line per new derived run:
    uid, analysis, the live run it redoes and how it ended.

    Returns 0 if every new derived run succeeded, 1 otherwise.
    """
    runs = replay(catalog, uid, calibration_uid=calibration_uid, gain_map_uid=gain_map_uid)
    for r in runs:
        status = r.exit_status + (f": {r.reason}" if r.reason else "")
        print(f"{r.uid}  {r.analysis:12s} replay of {r.replay_of or '(no live run)'}  {status}")
    return 0 if all(r.exit_status == "success" for r in runs) else 1
