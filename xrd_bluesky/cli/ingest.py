"""``xrd-bluesky ingest``: record the runs of a databroker-pack directory as raw runs.

Each run of the pack (:mod:`xrd_bluesky.sources.pack`) is checked whole (documents,
references, external files) before anything of it is written; then it is written into
``catalog.raw`` by bluesky-tiled-plugins' ``TiledWriter``, as live runs are, its frames
registered where they are (Resources pointing at the files in place), or with
``--copy`` at copies under ``<data dir>/frames/ingested/<run uid>/``. A run whose uid is
already in ``catalog.raw`` (with its stop document) is left as it is, so ingesting a pack
twice changes nothing. A run that cannot be ingested is named with the reason and the
others are ingested; a write the catalog refuses half-way is deleted (and a partial copy
left by an ingest that was killed is replaced), so no partial run stays in the catalog.
A run packed without a stop document is closed with one of ``exit_status='abort'``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UsageError, XRDBlueskyError
from ..sources.pack import (
    INGESTIBLE_SPECS,
    Pack,
    PackRun,
    check_run,
    copied,
    load_run,
    open_pack,
)
from ..store import open_catalog
from ..store.catalog import CatalogUnavailableError, answers, stored_run
from ..store.writer import tiled_writer

logger = logging.getLogger(__name__)

#: Events per upload (no live reader is waiting).
INGEST_BATCH_SIZE = 1000
#: Where ``--copy`` puts a run's external files, under the catalog's frames directory.
COPY_SUBDIRECTORY = "ingested"


@dataclass
class IngestReport:
    """What an ingest did: the runs written, those already in the catalog (uids) and
    those skipped (document file or uid, with the reason)."""

    ingested: list[PackRun] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every run of the pack is in the catalog."""
        return not self.skipped

    def lines(self) -> list[str]:
        """The closing summary."""
        events = sum(r.events for r in self.ingested)
        frames = sum(r.frames for r in self.ingested)
        out = [f"total: {len(self.ingested)} runs ingested ({events} events, {frames} frames), "
               f"{len(self.already)} already in the catalog, {len(self.skipped)} skipped"]
        out += [f"  skipped {what}: {reason}" for what, reason in self.skipped]
        return out


def add_parser(subparsers) -> None:
    """Add the ``ingest`` subcommand."""
    p = subparsers.add_parser("ingest", help="record the runs of a databroker-pack directory as raw runs")
    p.add_argument("pack", metavar="PACK_DIR", help="a databroker-pack directory (it holds catalog.yml)")
    p.add_argument("--root-map", dest="root_map", action="append", type=_pair("--root-map", "OLD=NEW"),
                   default=[], metavar="OLD=NEW",
                   help="external files once under OLD (a root of the pack or a directory) are now under NEW "
                        "(repeatable)")
    p.add_argument("--spec-alias", dest="spec_alias", action="append", type=_spec_alias, default=[],
                   metavar="SPEC=KNOWN_SPEC",
                   help=f"read resources of SPEC as KNOWN_SPEC ({', '.join(INGESTIBLE_SPECS)}; repeatable)")
    p.add_argument("--copy", action="store_true",
                   help="copy the external files into the catalog's data directory instead of registering them "
                        "where they are (embedded catalog only)")
    p.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    p.add_argument("--directory", help="data directory of the embedded catalog")
    p.set_defaults(func=run)


def _pair(option: str, form: str) -> Callable[[str], tuple[str, str]]:
    """argparse type: ``A=B`` with both sides non-empty."""
    def parse(text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not (sep and key and value):
            raise argparse.ArgumentTypeError(f"{option} takes {form}, not {text!r}")
        return key, value
    return parse


def _spec_alias(text: str) -> tuple[str, str]:
    """argparse type of ``--spec-alias``: ``SPEC=KNOWN_SPEC`` with a known spec."""
    spec, known = _pair("--spec-alias", "SPEC=KNOWN_SPEC")(text)
    if known not in INGESTIBLE_SPECS:
        raise argparse.ArgumentTypeError(f"--spec-alias {text!r}: {known!r} is not one of "
                                         f"{', '.join(INGESTIBLE_SPECS)}")
    return spec, known


def run(args: argparse.Namespace) -> int:
    """Ingest ``args.pack`` into the catalog the arguments name, printing one line per
    run and the summary; 0 if every run is in the catalog afterwards, 1 otherwise.

    Raises
    ------
    PackError
        The directory is not a databroker-pack (nothing is written).
    UsageError
        ``--copy`` with a remote catalog.
    """
    if args.copy and args.catalog:
        raise UsageError("--copy needs the embedded catalog (its data directory): a remote server reads "
                         "files from its own storage")
    pack = open_pack(args.pack, root_map=dict(args.root_map), spec_aliases=dict(args.spec_alias))
    catalog = open_catalog(args.catalog, directory=args.directory)
    try:
        report = ingest(catalog, pack, copy=args.copy, out=print)
    finally:
        catalog.close()
    for line in report.lines():
        print(line)
    for what, reason in report.skipped:  # and on stderr, as every command says what failed
        print(f"xrd-bluesky ingest: {what} not ingested: {' '.join(reason.split())}", file=sys.stderr)
    return 0 if report.ok else 1


def ingest(catalog, pack: Pack, *, copy: bool = False, out: Callable[[str], None] = lambda line: None
           ) -> IngestReport:
    """Ingest every run of ``pack`` into ``catalog.raw`` (see the module docstring),
    passing one line per run to ``out``.

    Parameters
    ----------
    catalog : Catalog
        See :func:`~xrd_bluesky.store.open_catalog`.
    pack : Pack
        See :func:`~xrd_bluesky.sources.pack.open_pack`.
    copy : bool
        Copy the external files under the catalog's frames directory.

    Raises
    ------
    UsageError
        ``copy`` with a catalog that has no frames directory (a remote one).
    CatalogUnavailableError
        The catalog stopped answering (the runs ingested so far stay).
    """
    if copy and catalog.frames_dir is None:
        raise UsageError("copying external files needs the embedded catalog's frames directory")
    report = IngestReport()
    for path in pack.document_files:
        what = str(path)
        try:
            run = load_run(pack, path)
            what = f"run {run.uid} ({path.name})"
            if _already_complete(catalog, run.uid):
                report.already.append(run.uid)
                out(f"{run.uid}  already in the catalog: skipped")
                continue
            checked = check_run(pack, run)  # before a partial copy in the catalog is replaced
            _drop_partial_copy(catalog, run.uid)
            run = _write(catalog, checked, copy)
        except CatalogUnavailableError:
            raise
        except XRDBlueskyError as exc:
            report.skipped.append((what, f"{type(exc).__name__}: {exc}"))
            out(f"{what}  NOT INGESTED: {type(exc).__name__}: {exc}")
            continue
        report.ingested.append(run)
        out(_run_line(run))
    return report


def _run_line(run: PackRun) -> str:
    """uid, scan_id, plan, events and exit status of an ingested run."""
    status = run.stop.get("exit_status", "?") + (" (no stop document in the pack)" if run.closed_by_ingest else "")
    return (f"{run.uid}  scan_id {run.start.get('scan_id', '-')}  {run.start.get('plan_name', '-')}  "
            f"{run.events} events  {run.frames} frames  {status}")


def _already_complete(catalog, uid: str) -> bool:
    """Whether run ``uid`` is in ``catalog.raw`` with its stop document."""
    stored = stored_run(catalog.raw, uid)
    return stored is not None and stored.metadata.get("stop") is not None


def _drop_partial_copy(catalog, uid: str) -> None:
    """Delete a copy of run ``uid`` without its stop document (an ingest or a sync
    interrupted while writing it), so that the checked pack's run is written whole."""
    stored = stored_run(catalog.raw, uid)
    if stored is not None:
        logger.info("run %s: deleting the partial copy in the catalog before writing it whole", uid)
        stored.delete(recursive=True, external_only=False)  # registered files are not deleted (external)


def _write(catalog, run: PackRun, copy: bool) -> PackRun:
    """Write ``run`` (checked) into ``catalog.raw``, its files copied first with
    ``copy``; what was written or copied of a run the catalog refuses is removed.

    Raises
    ------
    XRDBlueskyError
        The catalog refused a document, or a file could not be copied (reason named).
    CatalogUnavailableError
        The catalog stopped answering.
    """
    copies = catalog.frames_dir / COPY_SUBDIRECTORY / run.uid if copy else None
    try:
        if copies is not None:
            run = copied(run, copies)
        writer = tiled_writer(catalog.raw, INGEST_BATCH_SIZE)
        with catalog.upload_lock:
            for name, doc in run.documents:
                writer(name, doc)
    except Exception as exc:  # the catalog, its writer or the file system refused: undo, then say why
        if copies is not None:
            shutil.rmtree(copies, ignore_errors=True)
        if not answers(catalog.raw):  # a partial copy left is replaced by the next ingest (_drop_partial_copy)
            raise CatalogUnavailableError(f"the catalog stopped answering while ingesting run {run.uid} "
                                          f"({type(exc).__name__}: {exc}); ingest the pack again when it is "
                                          "back") from exc
        _drop_partial_copy(catalog, run.uid)
        raise XRDBlueskyError(f"the run could not be written (nothing of it is kept): {type(exc).__name__}: "
                              f"{exc}") from exc
    return run
