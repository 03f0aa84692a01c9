"""``xrd-bluesky replay``: run a stored raw run through the live analyses again.

The new derived runs (marked ``replay: True``, with ``replay_of`` naming the live run
they redo) go to the catalog's ``processed`` container; nothing is overwritten. See
:mod:`xrd_bluesky.store.replay`.

The raw run may be in this package's catalog or in any Tiled catalog of Bluesky runs
(``--catalog URI``, at its root or in ``--container PATH``), written by other software:
such a catalog is only read, and the derived runs go to this package's catalog
(``--into URI``, else the embedded one of ``--directory``). What such a run lacks comes
from a beamline description (``--beamline``) and the options (``--purpose``,
``--image-key``, ``--calibrant``, ``--poni``, ``--mask``). ``--export DIR`` also writes
every derived run as files (:mod:`xrd_bluesky.store.file_export`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import UsageError
from ..frames.reader import read_image
from ..schema.documents import check_uid
from ..science.calibration.geometry_source import GeometrySource
from ..sources.catalog_run import FRAME_MODES
from ..sources.file_inputs import read_geometry
from ..store import open_catalog
from ..store.catalog import holds_catalog, open_runs
from ..store.dask_replay import LOCAL, check_scheduler
from ..store.file_export import FileExporter
from ..store.parallel_replay import find_runs, parse_search, replay_runs
from ..store.replay import (
    ANALYSIS_OF_PURPOSE,
    ReplayedRun,
    RunCompletion,
    RunSource,
    replay,
)
from ..store.writer import processed_writer


def add_parser(subparsers) -> None:
    """Add the ``replay`` subcommand."""
    p = subparsers.add_parser("replay", help="replay a stored raw run through the live analyses into new derived runs")
    p.add_argument("uid", nargs="?", help="uid of a raw calibration, gain-map or measurement run")
    p.add_argument("--search", action="append", metavar="KEY=VALUE",
                   help="replay every raw run whose metadata matches (repeatable; dotted keys, JSON values)")
    p.add_argument("--workers", type=int, metavar="N", help="replay --search on a local Dask cluster of N worker "
                   "processes (default: one run after the other in this process)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="replay --search as tasks of the Dask cluster at ADDRESS "
                   "(tcp://host:port; its workers read and write the catalog at --catalog URI themselves), or of a "
                   "local cluster ('local': --workers N, default one per core)")
    p.add_argument("--catalog", metavar="URI", help="Tiled server holding the run (API key from TILED_API_KEY); "
                   "this package's catalog or any catalog of Bluesky runs, which is then only read")
    p.add_argument("--container", metavar="PATH", help="container of --catalog holding the runs (default its root)")
    p.add_argument("--into", metavar="URI", help="this package's served catalog receiving the derived runs of a run "
                   "of another catalog (default: the embedded catalog of --directory)")
    p.add_argument("--directory", help="data directory of the embedded catalog")
    p.add_argument("--calibration", metavar="UID",
                   help="derived calibration run to use instead of the geometry the live analysis used")
    p.add_argument("--gain-map", dest="gain_map", metavar="UID",
                   help="derived gain-map run to use instead of the one the live analysis used")
    p.add_argument("--beamline", metavar="FILE", help="beamline description completing runs of other software "
                   "(image, motor and monitor keys, instrument, nominal geometry)")
    p.add_argument("--poni", metavar="FILE", help="geometry to integrate with (a PONI file; m, rad)")
    p.add_argument("--mask", metavar="FILE", help="static mask image (non-zero = bad pixel)")
    p.add_argument("--purpose", choices=list(ANALYSIS_OF_PURPOSE), help="purpose of runs that record none")
    p.add_argument("--image-key", dest="image_key", metavar="KEY", help="data key of the detector's frames")
    p.add_argument("--calibrant", metavar="NAME", help="calibrant of calibration runs that record none (pyFAI name)")
    p.add_argument("--frames", choices=FRAME_MODES, default="auto",
                   help="read another catalog's frames from their files (files), through the server (client), or "
                        "from their files when readable here (auto, default)")
    p.add_argument("--export", metavar="DIR", help="also write every derived run as files (.xye .chi .csv .poni .tif)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay ``args.uid`` or the runs of ``args.search`` (see :func:`replay_and_print`),
    after checking the uids given, before any catalog is opened."""
    if (args.uid is None) == (args.search is None):
        raise UsageError("name one raw run (UID) or a search (--search KEY=VALUE), not both or neither")
    for value, what in ((args.uid, "UID"), (args.calibration, "--calibration"), (args.gain_map, "--gain-map")):
        if value is not None:
            check_uid(value, what)
    if args.uid is not None and (args.workers is not None or args.scheduler is not None):
        raise UsageError("--workers and --scheduler replay the runs of --search; one run is replayed here")
    if args.scheduler is not None:
        check_scheduler(args.scheduler)
    if args.container and not args.catalog:
        raise UsageError("--container names a container of the catalog given with --catalog URI")
    completion = _completion(args)
    exporter = None if args.export is None else FileExporter(args.export)
    with ExitStack() as stack:
        source = _source(args)
        if args.into and source is None:
            raise UsageError("--into receives the derived runs of a run of another catalog; this run's catalog is "
                             "this package's, which receives them itself: omit --into")
        catalog = open_catalog(args.into if source is not None else args.catalog, directory=args.directory)
        stack.callback(catalog.close)
        options = {"calibration_uid": args.calibration, "gain_map_uid": args.gain_map, "source": source,
                   "completion": completion, "exporter": exporter}
        if args.uid is not None:
            status = replay_and_print(catalog, args.uid, **options)
        else:
            status = replay_search_and_print(catalog, parse_search(args.search), workers=args.workers,
                                             scheduler=args.scheduler, **options)
    if exporter is not None:
        print(f"exported {exporter.files_written} files of {len(exporter.folders)} derived runs to {args.export}")
        exporter.check()
    return status


def _source(args: argparse.Namespace) -> RunSource | None:
    """The catalog holding the runs when it is not this package's (None: it is)."""
    if args.catalog is None:
        return None
    node = open_runs(args.catalog, args.container)
    if not args.container and holds_catalog(node):
        return None
    label = args.catalog.split("?")[0].rstrip("/") + (f" container {args.container}" if args.container else "")
    return RunSource(node, label, args.frames)


def _completion(args: argparse.Namespace) -> RunCompletion:
    """What the options say of runs that do not say it themselves."""
    start = {key: getattr(args, key) for key in ("purpose", "image_key", "calibrant") if getattr(args, key)}
    setup = None
    if args.beamline:
        from ..beamline import load_beamline

        setup = load_beamline(args.beamline).run_setup
    geometry = None if args.poni is None else GeometrySource.from_poni(read_geometry(args.poni))
    mask = None if args.mask is None else read_image(args.mask, "mask").mean() != 0
    return RunCompletion(start, setup, geometry, mask, None if args.mask is None else str(Path(args.mask).resolve()))


def replay_and_print(catalog, uid: str, *, calibration_uid: str | None = None, gain_map_uid: str | None = None,
                     source: RunSource | None = None, completion: RunCompletion = RunCompletion(),
                     exporter: FileExporter | None = None) -> int:
    """Replay raw run ``uid`` (of ``catalog``, or of ``source``) and print one line per
    new derived run: uid, analysis, the live run it redoes and how it ended.

    Returns 0 if every new derived run succeeded, 1 otherwise.
    """
    with _emitter(catalog, exporter) as emit:
        runs = replay(catalog, uid, calibration_uid=calibration_uid, gain_map_uid=gain_map_uid, source=source,
                      completion=completion, emit=emit)
    _print_runs(runs)
    return 0 if all(r.exit_status == "success" for r in runs) else 1


def replay_search_and_print(catalog, query: dict, *, workers: int | None = None, scheduler: str | None = None,
                            calibration_uid: str | None = None, gain_map_uid: str | None = None,
                            source: RunSource | None = None, completion: RunCompletion = RunCompletion(),
                            exporter: FileExporter | None = None) -> int:
    """Replay every raw run matching ``query`` and print, per raw run, its new derived
    runs or why it was not replayed, then how many were replayed and failed, naming
    each that failed. Without ``workers`` and ``scheduler`` the runs are replayed one
    after the other here; with them, as Dask tasks (see
    :func:`~xrd_bluesky.store.parallel_replay.replay_runs`: runs of this package's
    catalog without further options only).

    Returns 0 if every run was replayed and every new derived run succeeded, 1 otherwise.
    """
    uids = find_runs(catalog, query, runs=None if source is None else source.container,
                     purpose=completion.start.get("purpose"))
    if scheduler is None and workers is not None:
        scheduler = LOCAL
    where = "here, one after the other" if scheduler is None else f"on the Dask cluster at {scheduler}" \
        if scheduler != LOCAL else f"on {workers or os.cpu_count() or 1} worker(s)"
    print(f"replaying {len(uids)} raw runs matching {query} {where}")
    sys.stdout.flush()
    outcomes = replay_runs(catalog, uids, workers=workers, scheduler=scheduler, calibration_uid=calibration_uid,
                           gain_map_uid=gain_map_uid, source=source, completion=completion, exporter=exporter)
    for outcome in outcomes:
        print(f"raw run {outcome.raw_uid}:" + (f" not replayed: {outcome.error}" if outcome.error else ""))
        _print_runs(outcome.runs)
    failed = [o for o in outcomes if o.failed]
    replayed = sum(not o.error for o in outcomes)
    print(f"replayed {replayed} of {len(uids)} raw runs; {len(failed)} failed" + "".join(
        f"\n  failed {o.raw_uid}: {o.why}" for o in failed))
    return 1 if failed else 0


@contextmanager
def _emitter(catalog, exporter: FileExporter | None) -> Iterator[Callable[[str, dict], None]]:
    """The catalog's processed writer, and the file exporter when there is one, as one
    callable; the writer is closed on exit."""
    writer = processed_writer(catalog)
    try:
        yield writer if exporter is None else lambda name, doc: (writer(name, doc), exporter(name, doc))
    finally:
        writer.close()


def _print_runs(runs: list[ReplayedRun]) -> None:
    for r in runs:
        status = r.exit_status + (f": {r.reason}" if r.reason else "")
        print(f"{r.uid}  {r.analysis:12s} replay of {r.replay_of or '(no live run)'}  {status}")
    sys.stdout.flush()
