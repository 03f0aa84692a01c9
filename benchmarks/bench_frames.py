"""Benchmark: rendering full-size simulated Pilatus 2M CdTe frames.

Prints ``name: value`` lines: seconds per frame at a fixed detector position (the
geometry is cached: expected photons x Poisson x gain + dark/noise + clipping), the
first frame at a new position (pixel geometry computed), and the cost of numpy's
Poisson sampler alone on the same image, the floor of the method.

Run: ``python benchmarks/bench_frames.py``
"""

from __future__ import annotations

import time

import numpy as np

from xrd_bluesky.science.geometry import StagePosition
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.sim_devices.beamline import BeamlineConfig


def main(repeats: int = 10) -> None:
    config = BeamlineConfig()
    truth = config.true_geometry()
    response = DetectorResponse.simulate(config.detector, 0)
    rng = np.random.default_rng(0)
    sample = default_library()["CeO2"]

    def frame(position: StagePosition) -> np.ndarray:
        photons = expected_photons(sample, truth.poni_at(position), flux_ph_s=1e11, exposure_s=1.0,
                                   beamstop=config.beamstop)
        return detect(photons, response, 1.0, rng)

    t0 = time.perf_counter()
    frame(StagePosition(0, 0, 300))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        frame(StagePosition(0, 0, 300))
    cached = (time.perf_counter() - t0) / repeats
    lam = expected_photons(sample, truth.poni_at(StagePosition(0, 0, 300)), flux_ph_s=1e11, exposure_s=1.0,
                           beamstop=config.beamstop)
    t0 = time.perf_counter()
    for _ in range(repeats):
        rng.poisson(lam)
    poisson = (time.perf_counter() - t0) / repeats
    print(f"detector: {config.detector} {response.shape}")
    print(f"frame_s_cached_geometry: {cached:.3f}")
    print(f"frame_s_new_position: {first:.3f}")
    print(f"numpy_poisson_only_s: {poisson:.3f}")
    print(f"ratio_frame_over_poisson: {cached / poisson:.2f}")


if __name__ == "__main__":
    main()
