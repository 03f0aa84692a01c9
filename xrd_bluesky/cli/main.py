"""The ``xrd-bluesky`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from functools import partial
from importlib.metadata import entry_points

from ..errors import PlausibilityWarning
from . import (
    beamline,
    calibrate,
    demo,
    dfxrm,
    fit_peaks,
    gain_map,
    ingest,
    integrate,
    lineage,
    pdf,
    planner,
    replay,
    serve,
    session,
    strain,
    sync,
    worker,
)

#: The subcommands, in the order of ``xrd-bluesky --help``: each module has ``add_parser(subparsers)``.
SUBCOMMANDS = (demo, lineage, sync, serve, calibrate, gain_map, integrate, fit_peaks, strain, pdf, dfxrm, planner,
               replay, ingest, worker, beamline, session)
#: Entry-point group of subcommands other distributions add (``bench``, of ``xrd_bluesky_bench``).
PLUGIN_GROUP = "xrd_bluesky.commands"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, plug-ins' included."""
    parser = argparse.ArgumentParser(prog="xrd-bluesky", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    for command in SUBCOMMANDS:
        command.add_parser(sub)
    for plugin in entry_points(group=PLUGIN_GROUP):
        plugin.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``xrd-bluesky`` command line; return its exit status.

    Exit status: 0 success; 1 an analysis that did not succeed
    (:class:`~xrd_bluesky.errors.AnalysisError`) or an unexpected error (named, with
    the traceback under ``-v``); 2 a usage or input error (every other
    :class:`~xrd_bluesky.errors.XRDBlueskyError`, and argparse's own). Plausibility
    warnings are printed one line each.
    """
    # pyFAI's MultiGeometry thread pool races in numexpr with a single numexpr thread
    os.environ.setdefault("NUMEXPR_NUM_THREADS", "2")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..errors import AnalysisError, XRDBlueskyError

    prefix = f"xrd-bluesky {args.command}"
    with warnings.catch_warnings():
        warnings.simplefilter("always", PlausibilityWarning)
        warnings.showwarning = partial(_show_warning, prefix)
        try:
            return args.func(args)
        except XRDBlueskyError as exc:
            print(f"{prefix}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1 if isinstance(exc, AnalysisError) else 2
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # the last resort: named, never a bare traceback
            logging.getLogger(__name__).debug("unexpected error", exc_info=True)
            print(f"{prefix}: unexpected {type(exc).__name__}: {exc} (this is a bug of xrd-bluesky: please report it "
                  "with the output of the same command with -v)", file=sys.stderr)
            if args.verbose:
                traceback.print_exc()
            return 1


def _show_warning(prefix: str, message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning as one line: plausibility warnings as the command's own."""
    kind = "warning" if issubclass(category, PlausibilityWarning) else category.__name__
    print(f"{prefix}: {kind}: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
