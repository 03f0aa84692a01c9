"""What the benchmarks share: the reference method, timing, frames, differences, memory and CPU."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.sim_devices.beamline import BeamlineConfig

#: pyFAI's method for the reference path.
CSR = ("bbox", "csr", "cython")


def best_per_call(fn: Callable[[int], object], n: int, repeats: int) -> float:
    """Best over ``repeats`` of the mean time (s) of ``n`` calls ``fn(i)``."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def glass_frames(poni: Poni, response: DetectorResponse, n: int, seed: int) -> list[np.ndarray]:
    """``n`` simulated frames (counts) of the library's glass at ``poni``, 1 s at 1e11 ph/s,
    detected through ``response`` with the random seed ``seed``."""
    photons = expected_photons(default_library()["glass"], poni, flux_ph_s=1e11, exposure_s=1.0,
                               beamstop=BeamlineConfig().beamstop)
    rng = np.random.default_rng(seed)
    return [detect(photons, response, 1.0, rng) for _ in range(n)]


def max_rel(ours: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> float:
    """Largest relative difference of ``ours`` from ``ref`` over the ``valid`` bins."""
    return float(np.max(np.abs(ours[valid] / ref[valid] - 1)))


def traced_peak_mb(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()`` and the peak of the memory (MB) allocated while it ran, as tracemalloc
    sees it (Python objects and numpy arrays)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def rss_mb() -> float:
    """Resident memory of this process (MB), from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_s() -> tuple[float, float]:
    """CPU time (s, user + system) of this process, and of its children that have ended."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


class RequestCounter:
    """Counts the HTTP requests a Tiled client sends (an httpx event hook), until
    :meth:`close` or the end of a ``with`` block."""

    def __init__(self, client):
        self.count = 0
        self._hooks = client.context.http_client.event_hooks["request"]
        self._hooks.append(self._count)

    def _count(self, request) -> None:
        self.count += 1

    def close(self) -> None:
        """Stop counting."""
        if self._count in self._hooks:
            self._hooks.remove(self._count)

    def __enter__(self) -> RequestCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
