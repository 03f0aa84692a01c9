"""Benchmark: ``xrd-bluesky gain-map`` on files against the published notebook method on the same files.

True gain: 3 % pixel RMS, module-level steps (1 % RMS), 20 radiation-damaged and 10
dead pixels; glass slides at 5 detector positions (non-overlapping beamstop shadows),
10 frames each, about 1e4 photons per pixel in total. The frames (int32 counts), the
darks, one PONI and one beamstop mask per position are written to a temporary folder;
then, in this one process:

- ours: the whole ``xrd-bluesky gain-map`` command (reading and checking every frame,
  masks and darks, the gain map, its plausibility checks, writing and verifying the
  output TIFF), timed from its command line to its exit;
- published: the published notebook method on the same files: every frame read with
  fabio, averaged per position, dark-subtracted, masked, the PONIs read with
  ``pyFAI.load``, then :func:`published_gain_map`.

Prints ``name: value`` lines: for both methods the RMS error against the true gain, its
ratio to the Poisson limit (from the true photon counts), the worst module bias,
damaged/dead pixels found, false flags, the wall-clock time (s, acquisition excluded),
the CPU time (s, all threads: steadier than wall-clock time on a shared machine) and the
part of the wall-clock time spent collecting garbage (pyFAI runs a full collection for
every PONI file it loads, on both paths); the best of ``--repeats`` runs each,
interleaved, each from cold geometry caches; the published method's compute time alone
(no reading); ``speedup_vs_published`` = published time / our time (> 1: ours is faster),
and the same for CPU time and for the published compute time alone.

Run: ``python benchmarks/bench_gain_map.py [--detector Pilatus1M] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fabio
import numpy as np
import pyFAI

from xrd_bluesky.cli import main as cli_main
from xrd_bluesky.science import geometry
from xrd_bluesky.science.gain_map.method import PositionData, published_gain_map
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.sim import image_formation
from xrd_bluesky.science.sim.gain_map_measurement import (
    GainMapSet,
    score_gain_map,
    simulate_gain_map_set,
)
from xrd_bluesky.sim_devices.beamline import BeamlineConfig


def write_files(data: GainMapSet, folder: Path) -> list[str]:
    """Write every frame, dark, PONI and mask of ``data`` under ``folder`` (TIFF, int32
    counts as a Pilatus records them; masks uint8, non-zero = bad) and return the
    ``gain-map`` command's input arguments."""
    args = []
    for i, (position, stack) in enumerate(zip(data.positions, data.frames)):
        frames_dir = folder / f"pos{i}"
        frames_dir.mkdir()
        for k, frame in enumerate(stack):
            fabio.tifimage.TifImage(data=frame).write(str(frames_dir / f"f_{k:03d}.tif"))
        position.poni.write(folder / f"pos{i}.poni")
        fabio.tifimage.TifImage(data=position.mask.astype(np.uint8)).write(str(folder / f"mask{i}.tif"))
        args += ["--frames", str(frames_dir / "*.tif"), "--poni", str(folder / f"pos{i}.poni"),
                 "--mask", str(folder / f"mask{i}.tif")]
    dark_dir = folder / "dark"
    dark_dir.mkdir()
    for k, frame in enumerate(data.dark_frames):
        fabio.tifimage.TifImage(data=frame).write(str(dark_dir / f"d_{k:03d}.tif"))
    return args + ["--dark", str(dark_dir / "*.tif")]


def cold_caches() -> None:
    """Forget every geometry computed so far (pyFAI integrators and their per-pixel
    arrays), so that each run starts as a fresh command or notebook would."""
    geometry._integrator.cache_clear()
    image_formation.pixel_geometry.cache_clear()


def run_ours(args: list[str], output: Path) -> np.ndarray:
    """The ``gain-map`` command on ``args``, writing ``output``; its gain (NaN = bad)."""
    with contextlib.redirect_stdout(io.StringIO()):
        status = cli_main(["gain-map", *args, "-o", str(output)])
    if status != 0:
        raise RuntimeError(f"xrd-bluesky gain-map exited with {status}")
    return fabio.open(str(output)).data


def mean_of_files(pattern_dir: Path) -> np.ndarray:
    """The mean (float64) of the frames in ``pattern_dir``, read with fabio as the notebook does."""
    frames = [fabio.open(str(name)).data for name in sorted(pattern_dir.iterdir())]
    return np.mean(frames, axis=0, dtype=np.float64)


def run_published(data: GainMapSet, folder: Path) -> tuple[np.ndarray, float]:
    """The published method on the files under ``folder`` (PONIs read with ``pyFAI.load``,
    as the notebook does): its gain and its compute time (s) without the reading."""
    dark = mean_of_files(folder / "dark")
    positions = []
    for i, p in enumerate(data.positions):
        mask = fabio.open(str(folder / f"mask{i}.tif")).data != 0
        poni = Poni.from_integrator(pyFAI.load(str(folder / f"pos{i}.poni")))
        positions.append(PositionData(p.label, mean_of_files(folder / f"pos{i}") - dark, p.n_frames, poni, mask))
    t0 = time.perf_counter()
    gain = published_gain_map(positions)
    return gain, time.perf_counter() - t0


@dataclass
class Timing:
    """Best wall-clock time (s), CPU time (s, all threads) and garbage-collection time (s)
    of the repeated runs of one method."""

    wall_s: float = np.inf
    cpu_s: float = np.inf
    gc_s: float = np.inf

    def run(self, fn: Callable[[], object]) -> object:
        """``fn()`` from cold geometry caches, its times kept when best so far."""
        cold_caches()
        collections = []

        def on_gc(phase: str, info: dict) -> None:
            collections.append(time.perf_counter() if phase == "start" else -time.perf_counter())

        gc.callbacks.append(on_gc)
        try:
            cpu0, t0 = time.process_time(), time.perf_counter()
            result = fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        finally:
            gc.callbacks.remove(on_gc)
        if wall < self.wall_s:
            self.wall_s, self.gc_s = wall, -sum(collections)
        self.cpu_s = min(self.cpu_s, cpu)
        return result


def report(name: str, score, timing: Timing) -> None:
    print(f"{name}_rms_error: {score.rms_error:.5f}")
    print(f"{name}_poisson_limit: {score.poisson_limit:.5f}")
    print(f"{name}_rms_over_poisson: {score.rms_over_poisson:.3f}")
    print(f"{name}_worst_module_bias_percent: {100 * score.worst_module_bias:.4f}")
    print(f"{name}_damaged_found: {score.damaged_found} of 20")
    print(f"{name}_dead_found: {score.dead_found} of 10")
    print(f"{name}_false_flags: {score.false_flags} ({100 * score.false_flags / score.normal_pixels:.4f} %)")
    print(f"{name}_s: {timing.wall_s:.2f}")
    print(f"{name}_cpu_s: {timing.cpu_s:.2f}")
    print(f"{name}_garbage_collection_s: {timing.gc_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="Pilatus1M")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each method (the best counts)")
    args = parser.parse_args()
    config = BeamlineConfig(detector=args.detector)
    data = simulate_gain_map_set(config.true_geometry(), config.beamstop, detector=args.detector, keep_frames=True)
    ours_timing, published_timing, compute_only_s = Timing(), Timing(), np.inf
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        command_args = write_files(data, folder)
        for _ in range(args.repeats):
            ours = ours_timing.run(lambda: run_ours(command_args, folder / "gain.tif"))
            published, compute_s = published_timing.run(lambda: run_published(data, folder))
            compute_only_s = min(compute_only_s, compute_s)
    ours_bad = ~np.isfinite(ours)
    published_bad = (published > published.mean() + 4 * published.std()) | (published == 0)
    print(f"detector: {args.detector}")
    print(f"positions: {len(data.positions)}")
    print(f"frames_per_position: {data.positions[0].n_frames}")
    print(f"median_photons_per_pixel: {float(np.median(data.photons[data.photons > 0])):.0f}")
    report("ours", score_gain_map(np.where(ours_bad, 1.0, ours), ours_bad, data), ours_timing)
    report("published", score_gain_map(published, published_bad, data), published_timing)
    print(f"published_compute_only_s: {compute_only_s:.2f}")
    print(f"speedup_vs_published: {published_timing.wall_s / ours_timing.wall_s:.2f}")
    print(f"cpu_speedup_vs_published: {published_timing.cpu_s / ours_timing.cpu_s:.2f}")
    print(f"speedup_vs_published_compute_only: {compute_only_s / ours_timing.wall_s:.2f}")


if __name__ == "__main__":
    main()
