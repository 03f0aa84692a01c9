"""``xrd-bluesky replay``: run a stored raw run through the live analyses again.

The new derived runs (marked ``replay: True``, with ``replay_of`` naming the live run
they redo) go to the catalog's ``processed`` container; nothing is overwritten. See
:mod:`xrd_bluesky.store.replay`.
"""

from __future__ import annotations

import argparse

from .errors import MissingMetadataError
from .sources.documents import check_uid
from .store import open_catalog
from .store.parallel_replay import find_runs, parse_search, replay_runs
from .store.replay import ReplayedRun, replay


def add_parser(subparsers) -> None:
    """Add the ``replay`` subcommand."""
    p = subparsers.add_parser("replay", help="replay a stored raw run through the live analyses into new derived runs")
    p.add_argument("uid", nargs="?", help="uid of a raw calibration, gain-map or measurement run")
    p.add_argument("--search", action="append", metavar="KEY=VALUE",
                   help="replay every raw run whose metadata matches (repeatable; dotted keys, JSON values)")
    p.add_argument("--workers", type=int, default=1, help="worker processes for --search (default 1)")
    p.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    p.add_argument("--directory", help="data directory of the embedded catalog")
    p.add_argument("--calibration", metavar="UID",
                   help="derived calibration run to use instead of the geometry the live analysis used")
    p.add_argument("--gain-map", dest="gain_map", metavar="UID",
                   help="derived gain-map run to use instead of the one the live analysis used")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay ``args.uid`` in the catalog the arguments name (see :func:`replay_and_print`),
    after checking the uids given, before the catalog is opened."""
    if (args.uid is None) == (args.search is None):
        raise MissingMetadataError("name one raw run (UID) or a search (--search KEY=VALUE), not both or neither")
    for value, what in ((args.uid, "UID"), (args.calibration, "--calibration"), (args.gain_map, "--gain-map")):
        if value is not None:
            check_uid(value, what)
    catalog = open_catalog(args.catalog, directory=args.directory)
    try:
        if args.uid is not None:
            return replay_and_print(catalog, args.uid, calibration_uid=args.calibration,
                                    gain_map_uid=args.gain_map)
        return replay_search_and_print(catalog, parse_search(args.search), args.workers,
                                       calibration_uid=args.calibration, gain_map_uid=args.gain_map)
    finally:
        catalog.close()


def replay_and_print(catalog, uid: str, *, calibration_uid: str | None = None,
                     gain_map_uid: str | None = None) -> int:
    """Replay raw run ``uid`` of ``catalog`` and print one line per new derived run:
    uid, analysis, the live run it redoes and how it ended.

    Returns 0 if every new derived run succeeded, 1 otherwise.
    """
    runs = replay(catalog, uid, calibration_uid=calibration_uid, gain_map_uid=gain_map_uid)
    _print_runs(runs)
    return 0 if all(r.exit_status == "success" for r in runs) else 1


def replay_search_and_print(catalog, query: dict, workers: int, *, calibration_uid: str | None = None,
                            gain_map_uid: str | None = None) -> int:
    """Replay every raw run matching ``query`` on ``workers`` processes and print, per
    raw run, its new derived runs or why it was not replayed.

    Returns 0 if every run was replayed and every new derived run succeeded, 1 otherwise.
    """
    uids = find_runs(catalog, query)
    print(f"replaying {len(uids)} raw runs matching {query} on {workers} worker(s)")
    outcomes = replay_runs(catalog, uids, workers=workers, calibration_uid=calibration_uid,
                           gain_map_uid=gain_map_uid)
    for outcome in outcomes:
        print(f"raw run {outcome.raw_uid}:" + (f" not replayed: {outcome.error}" if outcome.error else ""))
        _print_runs(outcome.runs)
    ok = all(not o.error and all(r.exit_status == "success" for r in o.runs) for o in outcomes)
    return 0 if ok else 1


def _print_runs(runs: list[ReplayedRun]) -> None:
    for r in runs:
        status = r.exit_status + (f": {r.reason}" if r.reason else "")
        print(f"{r.uid}  {r.analysis:12s} replay of {r.replay_of or '(no live run)'}  {status}")
