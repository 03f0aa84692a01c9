"""Benchmark: replay of a foreign run against replay of our own, same run, same work.

In one process, two simulated beamlines built alike (Pilatus 1M, same seed, so the same
frames and ion-chamber readings) record the same measurement of CeO2
(``count([detector, i0, it, stage], num=10)``):

* **own**: into this package's embedded catalog with its raw writer
  (``purpose="measurement"`` in the start document);
* **foreign**: into a stock Tiled server in its own process (``tiled serve catalog
  --temp``) with bluesky-tiled-plugins' plain ``TiledWriter`` (no purpose, nothing of
  ours), as in ``tests/test_foreign_catalog.py``.

Each is then replayed into the embedded catalog with the same completion (the
simulator's true geometry as a fixed PONI, the simulated beamline's description for
the instrument: beamstop, flux calibration, polarization), so the analysis is the same;
the foreign run also gets ``purpose="measurement"``. The foreign run's frames are read
in place (``files``: its HDF5 file on this disk) or through the stock server
(``client``). Each case is timed ``repeats`` times after a warm-up replay, the median is
printed, and the derived patterns of the own and foreign replays are compared (largest
relative difference of intensities and sigmas, in 2theta and Q, over the points finite
and non-zero in both; ``inf`` if their finite points differ).

Prints ``name: value`` lines: ``own_replay_s``, ``foreign_replay_files_s``,
``foreign_replay_client_s``, their ratios ``foreign_over_own_files`` and
``foreign_over_own_client``, ``frames`` and ``pattern_agreement``. Writing the derived
run into the catalog is the same work in every case and most of a replay's time, so the
same three replays are also timed with their derived documents discarded (reading the
raw run and the analysis alone): ``*_read_and_analyse_s`` and
``foreign_over_own_*_without_writing``.

Run: ``python benchmarks/bench_foreign_replay.py [--frames 10] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bluesky import RunEngine
from bluesky.plans import count
from bluesky_tiled_plugins import TiledWriter
from tiled.client import from_uri

from xrd_bluesky.science.calibration.geometry_source import GeometrySource
from xrd_bluesky.sim_devices import BeamlineConfig, make_beamline
from xrd_bluesky.store import open_catalog
from xrd_bluesky.store.replay import RunCompletion, RunSource, replay
from xrd_bluesky.store.writer import raw_writer

DETECTOR = "Pilatus1M"
SEED = 5
#: Derived-pattern keys compared between the own and the foreign replay.
PATTERN_KEYS = ("intensity_2theta", "sigma_2theta", "intensity_q", "sigma_q")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stock_server(frames_dir: Path) -> tuple[subprocess.Popen, object]:
    """A stock Tiled server (``tiled serve catalog --temp``) serving ``frames_dir``, and
    a client of it."""
    key, port = secrets.token_hex(8), _free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "tiled"), "serve", "catalog", "--temp",
                               "--api-key", key, "--port", str(port), "-r", str(frames_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            return server, from_uri(f"http://127.0.0.1:{port}", api_key=key)
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.3)


def beamline(data_dir: Path):
    """The simulated beamline (same seed each time: the same frames), CeO2 loaded."""
    bl = make_beamline(BeamlineConfig(detector=DETECTOR, seed=SEED), data_dir=data_dir)
    bl.sample_changer.slot.put("CeO2")
    return bl


def record(bl, subscriber: Callable, frames: int, **md) -> str:
    """Uid of a ``count`` of the detector, both ion chambers and the detector stage (the
    description places the detector by its readings) written by ``subscriber``."""
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(subscriber)
    (uid,) = RE(count([bl.detector, bl.i0, bl.it, bl.stage], num=frames), sample={"name": "CeO2"}, **md)
    return uid


def median_time(fn: Callable[[], list], repeats: int) -> tuple[float, list]:
    """Median wall time (s) of ``fn`` over ``repeats`` calls after one warm-up, and the
    result of the last call (every derived run checked to have succeeded)."""
    times, runs = [], fn()
    for _ in range(repeats):
        t0 = time.perf_counter()
        runs = fn()
        times.append(time.perf_counter() - t0)
        failed = [r for r in runs if r.exit_status != "success"]
        if failed:
            raise RuntimeError(f"replay failed: {failed}")
    return statistics.median(times), runs


def discard(name: str, doc: dict) -> None:
    """A replay's ``emit`` that writes nothing (times reading and analysis alone)."""


def pattern(catalog, runs: list) -> dict[str, np.ndarray]:
    """The integration run's reduced patterns (per frame) by key."""
    (integration,) = [r for r in runs if r.analysis == "integration"]
    primary = catalog.processed[integration.uid]["primary"].read()
    return {key: np.asarray(primary[key], dtype=float) for key in PATTERN_KEYS}


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest relative difference of ``b`` from ``a`` over the points finite and
    non-zero in both; inf when their finite points are not the same."""
    worst = 0.0
    for key in PATTERN_KEYS:
        x, y = a[key], b[key]
        if x.shape != y.shape or not np.array_equal(np.isfinite(x), np.isfinite(y)):
            return float("inf")
        both = np.isfinite(x) & (x != 0)
        if both.any():
            worst = max(worst, float(np.max(np.abs(y[both] / x[both] - 1))))
    return worst


def main(frames: int = 10, repeats: int = 5) -> dict:
    out: dict[str, float | int] = {"frames": frames}
    with tempfile.TemporaryDirectory(prefix="xrd-bluesky-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "foreign_frames").mkdir()
        server, client = stock_server(tmp / "foreign_frames")
        catalog = open_catalog(directory=tmp / "ours")
        try:
            own_bl = beamline(catalog.frames_dir)
            writer = raw_writer(catalog)
            try:
                own_uid = record(own_bl, writer, frames, purpose="measurement")
            finally:
                writer.close()
            foreign_bl = beamline(tmp / "foreign_frames")
            foreign_uid = record(foreign_bl, TiledWriter(client), frames)
            assert "purpose" not in client[foreign_uid].metadata["start"]

            geometry = GeometrySource.from_poni(own_bl.true_poni())
            assert foreign_bl.true_poni() == own_bl.true_poni()
            setup = own_bl.description.run_setup
            own_completion = RunCompletion(setup=setup, geometry=geometry)
            foreign_completion = RunCompletion({"purpose": "measurement"}, setup=setup, geometry=geometry)
            sources = {"own": None, **{f"foreign_{mode}": RunSource(client, f"{client.uri} (stock)", mode)
                                       for mode in ("files", "client")}}

            def replayer(case: str, emit: Callable | None = None) -> Callable[[], list]:
                uid, source = (own_uid, None) if case == "own" else (foreign_uid, sources[case])
                completion = own_completion if case == "own" else foreign_completion
                return lambda: replay(catalog, uid, source=source, completion=completion, emit=emit)

            patterns = {}
            for case in sources:
                out[f"{case}_replay_s"], runs = median_time(replayer(case), repeats)
                patterns[case] = pattern(catalog, runs)
                out[f"{case}_read_and_analyse_s"], _ = median_time(replayer(case, discard), repeats)
            for mode in ("files", "client"):
                out[f"foreign_over_own_{mode}"] = out[f"foreign_{mode}_replay_s"] / out["own_replay_s"]
                out[f"foreign_over_own_{mode}_without_writing"] = (out[f"foreign_{mode}_read_and_analyse_s"]
                                                                   / out["own_read_and_analyse_s"])
            out["pattern_agreement"] = max(agreement(patterns["own"], patterns[f"foreign_{mode}"])
                                           for mode in ("files", "client"))
        finally:
            catalog.close()
            server.terminate()
            server.wait(10)
    out["foreign_replay_files_s"] = out.pop("foreign_files_replay_s")
    out["foreign_replay_client_s"] = out.pop("foreign_client_replay_s")
    for name in ("own_replay_s", "foreign_replay_files_s", "foreign_replay_client_s", "foreign_over_own_files",
                 "foreign_over_own_client", "frames", "pattern_agreement", "own_read_and_analyse_s",
                 "foreign_files_read_and_analyse_s", "foreign_client_read_and_analyse_s",
                 "foreign_over_own_files_without_writing", "foreign_over_own_client_without_writing"):
        value = out[name]
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10, help="frames of the measured run")
    parser.add_argument("--repeats", type=int, default=5, help="timed replays of each case (after a warm-up)")
    args = parser.parse_args()
    main(args.frames, args.repeats)
