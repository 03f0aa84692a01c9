"""The ``xrd-bluesky bench`` subcommand: a plug-in of the ``xrd-bluesky`` command (the
``xrd_bluesky.commands`` entry point), so that the runtime package imports nothing of
its benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    """Add the ``bench`` subcommand and its benchmarks."""
    bench = subparsers.add_parser("bench", help="side-by-side benchmarks against the reference path")
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


def _bench_integrate(args: argparse.Namespace) -> int:
    from .integrate import integrate

    integrate(args.detector, n_frames=args.frames, npt=args.npt, repeats=args.repeats)
    return 0


def _bench_stitch(args: argparse.Namespace) -> int:
    from .stitch import stitch_arm

    stitch_arm(args.positions, detector=args.detector, distance_m=args.distance_m, first_deg=args.first_deg,
               last_deg=args.last_deg, npt=args.npt, unit=args.unit, sample=args.sample, repeats=args.repeats)
    return 0


def _bench_live(args: argparse.Namespace) -> int:
    from .live import live

    result = live(args.seconds, frames_per_event=args.frames_per_event, frame_rate=args.frame_rate,
                  warmup_s=args.warmup, detector=args.detector, paced=args.paced, run_seconds=args.run_seconds,
                  served=args.served)
    # paced, the rate can only approach the detector's (scheduling jitter of the sleeps)
    return 0 if result["frame_rate_within_runs_hz"] >= (0.98 if args.paced else 1.0) * args.frame_rate else 1


def _bench_replay(args: argparse.Namespace) -> int:
    from .replay import replay_speedup

    result = replay_speedup(args.runs, workers=args.workers, num=args.num, detector=args.detector)
    return 0 if result["max_rel_diff_parallel_vs_serial"] <= 1e-12 else 1


def _bench_writes(args: argparse.Namespace) -> int:
    from .writes import writes

    result = writes(args.runs, num=args.num, database=args.database)
    return 0 if result["stored_content_equal"] else 1


def _bench_growth(args: argparse.Namespace) -> int:
    from .growth import growth

    growth(args.runs)
    return 0


def _bench_fits(args: argparse.Namespace) -> int:
    from .fits import fits

    fits(args.fits)
    return 0


def _bench_pdf(args: argparse.Namespace) -> int:
    from .pdf import pdf

    result = pdf(args.points)
    return 0 if result["max_abs_diff_vs_direct_rel"] <= 1e-3 else 1


def _bench_outage(args: argparse.Namespace) -> int:
    from .outage import outage

    result = outage(args.repeats, num=args.num)
    return 0 if max(result["ratio_killed_to_up"], result["ratio_down_to_up"]) <= 1.2 else 1


def _bench_inputs(args: argparse.Namespace) -> int:
    import tempfile

    from .bad_inputs import run, summary, table

    with tempfile.TemporaryDirectory(prefix="xrd-bad-inputs-") as tmp:
        result = run(Path(args.directory or tmp), progress=print if args.verbose else lambda line: None)
    print("\n".join(table(result["outcomes"])))
    numbers = summary(result)
    for key, value in numbers.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    clean = numbers["silent_results"] == numbers["unexpected_errors"] == numbers["good_inputs_not_clean"] == 0
    return 0 if clean else 1
