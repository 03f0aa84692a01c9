"""Benchmark: our gain map against the published notebook method, on one simulated set.

True gain: 3 % pixel RMS, module-level steps (1 % RMS), 20 radiation-damaged and 10
dead pixels; glass slides at 5 detector positions (non-overlapping beamstop shadows),
10 frames each, about 1e4 photons per pixel in total. Prints ``name: value`` lines for
both methods: RMS error against the true gain, its ratio to the Poisson limit (from
the true photon counts), the worst module bias, damaged/dead pixels found, false
flags and the time (acquisition excluded). The two run in this one process.

Run: ``python benchmarks/bench_gain_map.py [--detector Pilatus2MCdTe]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from xrd_bluesky.science.gain_map import compute_gain_map, published_gain_map
from xrd_bluesky.science.gain_map_simulation import score_gain_map, simulate_gain_map_set
from xrd_bluesky.sim_devices.beamline import BeamlineConfig


def report(name: str, score, seconds: float) -> None:
    print(f"{name}_rms_error: {score.rms_error:.5f}")
    print(f"{name}_poisson_limit: {score.poisson_limit:.5f}")
    print(f"{name}_rms_over_poisson: {score.rms_over_poisson:.3f}")
    print(f"{name}_worst_module_bias_percent: {100 * score.worst_module_bias:.4f}")
    print(f"{name}_damaged_found: {score.damaged_found} of 20")
    print(f"{name}_dead_found: {score.dead_found} of 10")
    print(f"{name}_false_flags: {score.false_flags} ({100 * score.false_flags / score.normal_pixels:.4f} %)")
    print(f"{name}_time_s: {seconds:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="Pilatus2MCdTe")
    args = parser.parse_args()
    config = BeamlineConfig(detector=args.detector)
    data = simulate_gain_map_set(config.true_geometry(), config.beamstop, detector=args.detector)
    t0 = time.perf_counter()
    ours = compute_gain_map(data.positions, dark_rate=data.dark)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    published = published_gain_map(data.positions)
    t_pub = time.perf_counter() - t0
    flagged = (published > published.mean() + 4 * published.std()) | (published == 0)
    print(f"detector: {args.detector}")
    print(f"median_photons_per_pixel: {float(np.median(data.photons[data.photons > 0])):.0f}")
    report("ours", score_gain_map(ours.gain, ours.bad, data), t_ours)
    report("published", score_gain_map(published, flagged, data), t_pub)
    print(f"time_ratio_ours_over_published: {t_ours / t_pub:.2f}")


if __name__ == "__main__":
    main()
