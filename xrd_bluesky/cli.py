"""The ``xrd-bluesky`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from functools import partial
from pathlib import Path

from . import (beamline_command, calibrate_files, dfxrm_command, fit_peaks_files, gain_map_files, ingest_command,
               integrate_files, pdf_files, planner_command, replay_command, strain_files, worker_command)
from .command_options import whole_number_in
from .errors import PlausibilityWarning


def _demo(args) -> int:
    from .demo import run_demo

    result = run_demo(Path(args.output), directory=Path(args.directory) if args.directory else None,
                      detector=args.detector)
    centre_px, distance_pct, tilt_deg = result["calibration_worst"]
    ok = (result["worst_ring_error_deg"] <= 0.02 and centre_px <= 0.2 and distance_pct <= 0.05 and tilt_deg <= 0.02
          and abs(result["water_factor"] - 1) <= 0.02 and result["absolute_worst_rel"] <= 0.02
          and result["pdf_worst_peak_A"] <= 0.005 and abs(result["pdf_baseline_rel"]) <= 0.10
          and all(e <= bar for e, bar in zip(result["arm_calibration_worst"], (0.2, 0.05, 0.02)))
          and result["arm_ring_worst_deg"] <= 0.02)
    return 0 if ok else 1


def _lineage(args) -> int:
    from .sources.documents import check_uid
    from .store import lineage, open_catalog

    check_uid(args.uid, "UID")
    catalog = open_catalog(args.catalog, directory=args.directory)
    try:
        tree = lineage(catalog, args.uid)
        print("\n".join(tree.lines()))
        print(f"raw runs: {', '.join(sorted(tree.raw_uids()))}")
    finally:
        catalog.close()
    return 0


def _sync(args) -> int:
    from .store import open_catalog
    from .store.sync import sync

    catalog = open_catalog(args.catalog, directory=args.directory)
    try:
        report = sync(catalog, catalog.spool_dir)
    finally:
        catalog.close()
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _serve(args) -> int:
    from .store.catalog import data_directory
    from .store.server import serve

    serve(args.directory or data_directory(), database=args.database, host=args.host, port=args.port)
    return 0


def _session(args) -> int:
    import IPython

    from .session import build_session
    from .sim_devices import BeamlineConfig

    config = None if args.beamline else BeamlineConfig(detector=args.detector)
    session = build_session(directory=Path(args.directory) if args.directory else None, uri=args.catalog,
                            config=config, beamline_file=args.beamline, plots=True, publish_to=args.publish,
                            analyse=args.analysis)
    devices = (f"simulated devices ({', '.join(session.beamline.devices)}), " if session.beamline is not None
               else "")
    banner = (f"xrd-bluesky session at {session.description.name}: RE (attached: session), catalog "
              f"(raw/processed), beamline (the description), {devices}plans, bp, bps are ready.")
    if session.publisher is not None:
        banner += f"\nDocuments are published to {session.publisher.address} (for `xrd-bluesky worker`)."
    if session.router is None:
        banner += "\nRuns are recorded but not analysed in this session."
    try:
        IPython.start_ipython(argv=[], user_ns=session.namespace(), display_banner=True,
                              config=_ipython_banner(banner))
    finally:
        session.close()  # stops the embedded server's thread, which would keep the process alive
    return 0


def _bench_integrate(args) -> int:
    from .bench.integrate import integrate

    integrate(args.detector, n_frames=args.frames, npt=args.npt, repeats=args.repeats)
    return 0


def _bench_stitch(args) -> int:
    from .bench.stitch import stitch_arm

    stitch_arm(args.positions, detector=args.detector, distance_m=args.distance_m, first_deg=args.first_deg,
               last_deg=args.last_deg, npt=args.npt, unit=args.unit, sample=args.sample, repeats=args.repeats)
    return 0


def _bench_live(args) -> int:
    from .bench.live import live

    result = live(args.seconds, frames_per_event=args.frames_per_event, frame_rate=args.frame_rate,
                  warmup_s=args.warmup, detector=args.detector, paced=args.paced, run_seconds=args.run_seconds,
                  served=args.served)
    # paced, the rate can only approach the detector's (scheduling jitter of the sleeps)
    return 0 if result["frame_rate_within_runs_hz"] >= (0.98 if args.paced else 1.0) * args.frame_rate else 1


def _bench_replay(args) -> int:
    from .bench.replay import replay_speedup

    result = replay_speedup(args.runs, workers=args.workers, num=args.num, detector=args.detector)
    return 0 if result["max_rel_diff_parallel_vs_serial"] <= 1e-12 else 1


def _bench_writes(args) -> int:
    from .bench.writes import writes

    result = writes(args.runs, num=args.num, database=args.database)
    return 0 if result["stored_content_equal"] else 1


def _bench_growth(args) -> int:
    from .bench.growth import growth

    growth(args.runs)
    return 0


def _bench_fits(args) -> int:
    from .bench.fits import fits

    fits(args.fits)
    return 0


def _bench_pdf(args) -> int:
    from .bench.pdf import pdf

    result = pdf(args.points)
    return 0 if result["max_abs_diff_vs_direct_rel"] <= 1e-3 else 1


def _bench_outage(args) -> int:
    from .bench.outage import outage

    result = outage(args.repeats, num=args.num)
    return 0 if max(result["ratio_killed_to_up"], result["ratio_down_to_up"]) <= 1.2 else 1


def _bench_inputs(args) -> int:
    import tempfile

    from .bad_inputs import run, summary, table

    with tempfile.TemporaryDirectory(prefix="xrd-bad-inputs-") as tmp:
        result = run(Path(args.directory or tmp), progress=print if args.verbose else lambda line: None)
    print("\n".join(table(result["outcomes"])))
    numbers = summary(result)
    for key, value in numbers.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0 if numbers["silent_results"] == numbers["unexpected_errors"] == numbers["good_inputs_not_clean"] == 0 else 1


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

    lin = sub.add_parser("lineage", help="walk a run back to the raw runs it came from")
    lin.add_argument("uid", help="uid of a raw or derived run")
    lin.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    lin.add_argument("--directory", help="data directory of the embedded catalog")
    lin.set_defaults(func=_lineage)

    syn = sub.add_parser("sync", help="back-fill the catalog with spooled runs it is missing (idempotent)")
    syn.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    syn.add_argument("--directory", help="data directory (embedded catalog and spool)")
    syn.set_defaults(func=_sync)

    srv = sub.add_parser("serve", help="serve the catalog of a data directory over HTTP (API key from TILED_API_KEY)")
    srv.add_argument("--directory", help="data directory (default: $XRD_BLUESKY_DATA or the user data dir)")
    srv.add_argument("--database", help="catalog database URI (default: SQLite and DuckDB in the directory); "
                                        "postgresql://user@host:port/db keeps the tables there too")
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    srv.add_argument("--port", type=whole_number_in(1, 65535, "port"), default=8000, help="port (default: 8000)")
    srv.set_defaults(func=_serve)

    calibrate_files.add_parser(sub)
    gain_map_files.add_parser(sub)
    integrate_files.add_parser(sub)
    fit_peaks_files.add_parser(sub)
    strain_files.add_parser(sub)
    pdf_files.add_parser(sub)
    dfxrm_command.add_parser(sub)
    planner_command.add_parser(sub)
    replay_command.add_parser(sub)
    ingest_command.add_parser(sub)
    worker_command.add_parser(sub)
    beamline_command.add_parser(sub)

    bench = sub.add_parser("bench", help="side-by-side benchmarks against the reference path")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    bint = bench_sub.add_parser("integrate", help="1D integration and MultiGeometry, ours vs pyFAI CSR")
    bint.add_argument("--detector", default="Pilatus2MCdTe", help="pyFAI detector model")
    bint.add_argument("--frames", type=int, default=8, help="distinct frames cycled through")
    bint.add_argument("--npt", type=int, default=2000, help="radial bins")
    bint.add_argument("--repeats", type=int, default=5, help="timing repeats (the best is reported)")
    bint.set_defaults(func=_bench_integrate)
    bst = bench_sub.add_parser("stitch", help="stitching a detector on a 2theta arm, ours vs pyFAI MultiGeometry")
    bst.add_argument("--positions", type=int, default=50, help="arm angles")
    bst.add_argument("--detector", default="Pilatus300kw", help="pyFAI detector model")
    bst.add_argument("--distance-m", type=float, default=0.9, help="sample-detector distance (m)")
    bst.add_argument("--first-deg", type=float, default=5.0, help="first arm angle (deg)")
    bst.add_argument("--last-deg", type=float, default=39.0, help="last arm angle (deg)")
    bst.add_argument("--npt", type=int, default=2000, help="radial bins")
    bst.add_argument("--unit", default="2th_deg", choices=("2th_deg", "q_nm^-1", "q_A^-1"), help="radial unit")
    bst.add_argument("--sample", default="glass", help="sample of the simulator's library")
    bst.add_argument("--repeats", type=int, default=3, help="timing repeats (the best is reported)")
    bst.set_defaults(func=_bench_stitch)
    blive = bench_sub.add_parser("live", help="the live chain at a detector frame rate on pre-rendered frames")
    blive.add_argument("--seconds", type=float, default=120.0, help="measured duration after the warm-up (s)")
    blive.add_argument("--warmup", type=float, default=20.0, help="warm-up (s)")
    blive.add_argument("--frame-rate", type=float, default=30.0, help="detector frame rate (Hz): exposure 1/rate")
    blive.add_argument("--frames-per-event", type=int, default=10, help="frames per trigger")
    blive.add_argument("--detector", default="Pilatus2MCdTe", help="pyFAI detector model")
    blive.add_argument("--paced", action="store_true",
                       help="trigger no faster than the detector delivers frames at --frame-rate")
    blive.add_argument("--run-seconds", type=float, help="split into consecutive runs of this length (s)")
    blive.add_argument("--served", action="store_true",
                       help="upload to a catalog served by `xrd-bluesky serve` in a child process (default: embedded)")
    blive.set_defaults(func=_bench_live)
    bfits = bench_sub.add_parser("fits", help="single-peak fits per second, ours vs scipy")
    bfits.add_argument("--fits", type=int, default=2000, help="fits per model")
    bfits.set_defaults(func=_bench_fits)

    bpdf = bench_sub.add_parser("pdf", help="G(r) of a pattern: ours (FFT) vs the direct sine integral; "
                                "the real Ni G(r) vs PDFgetX3's")
    bpdf.add_argument("--points", type=int, default=3000, help="points of the pattern")
    bpdf.set_defaults(func=_bench_pdf)

    brep = bench_sub.add_parser("replay", help="replay --search on one worker process and on several")
    brep.add_argument("--runs", type=int, default=12, help="measurement runs recorded, then replayed")
    brep.add_argument("--workers", type=int, default=2, help="worker processes of the parallel replay")
    brep.add_argument("--num", type=int, default=4, help="exposures per detector position (3 positions)")
    brep.add_argument("--detector", default="Pilatus2MCdTe", help="pyFAI detector model")
    brep.set_defaults(func=_bench_replay)

    bwri = bench_sub.add_parser("writes", help="requests and server CPU per derived run replayed into a served catalog")
    bwri.add_argument("--runs", type=int, default=8, help="measurement runs recorded, then replayed")
    bwri.add_argument("--num", type=int, default=4, help="exposures per detector position (3 positions)")
    bwri.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                      help="catalog database of the served catalog (postgresql: a temporary local server)")
    bwri.set_defaults(func=_bench_writes)

    bgro = bench_sub.add_parser("growth", help="run-start lookups and a search by sample as the catalog grows")
    bgro.add_argument("--runs", type=int, default=10_000, help="runs in the catalog at the end (checkpoints at "
                      "100, 1,000 and 10,000 up to it)")
    bgro.set_defaults(func=_bench_growth)

    bout = bench_sub.add_parser("outage", help="scan time with the catalog up, killed mid-scan and down")
    bout.add_argument("--repeats", type=int, default=2, help="scans per scenario (the best is reported)")
    bout.add_argument("--num", type=int, default=4, help="exposures per detector position (3 positions)")
    bout.set_defaults(func=_bench_outage)

    binp = bench_sub.add_parser("inputs", help="every file command against a corpus of bad inputs: named errors, "
                                "warnings, silent results; time to the error; cost of the checks")
    binp.add_argument("--directory", help="where to write the corpus (default: a temporary folder)")
    binp.set_defaults(func=_bench_inputs)

    session = sub.add_parser("session", help="IPython with RE, devices, catalog and callbacks ready")
    session.add_argument("--directory", help="data directory of the embedded catalog")
    session.add_argument("--catalog", help="URI of a remote Tiled server (API key from TILED_API_KEY)")
    session.add_argument("--beamline", metavar="FILE",
                         help="beamline description (TOML): your devices are yours to create in the session; "
                              "no simulated devices unless the description says simulated = true")
    session.add_argument("--detector", default="Pilatus2MCdTe", help="pyFAI detector model of the simulated beamline")
    session.add_argument("--publish", metavar="HOST:PORT",
                         help="also publish every document to this bluesky-0MQ-proxy input port, for "
                              "`xrd-bluesky worker` on another host")
    session.add_argument("--no-analysis", dest="analysis", action="store_false",
                         help="do not analyse runs in this session (a worker does); raw data is recorded as always")
    session.set_defaults(func=_session)
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
    from .errors import AnalysisError, XRDBlueskyError

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
