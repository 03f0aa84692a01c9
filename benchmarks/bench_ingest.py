"""Benchmark: ``xrd-bluesky ingest`` of a databroker-pack directory.

Builds, in a temporary directory, a pack of 20 runs recorded by an ophyd v1 area
detector (30 frames of 256x256 per run, one AD_HDF5 file per run, documents by
suitcase-msgpack), then times their ingest into a fresh embedded catalog, frames
registered where they are (not copied), and a second ingest, which finds every run
already there. Prints ``name: value`` lines.

Needs the test extras (the pack is built with the tests' builders, ``tests/pack_builders.py``).

Run: ``python benchmarks/bench_ingest.py``
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' device and pack builders

from bluesky import RunEngine  # noqa: E402
from pack_builders import detector, image_run, write_pack  # noqa: E402

from xrd_bluesky.cli.ingest import ingest  # noqa: E402
from xrd_bluesky.sources.pack import open_pack  # noqa: E402
from xrd_bluesky.store import open_catalog  # noqa: E402


def main(runs: int = 20, frames_per_run: int = 30, shape: tuple[int, int] = (256, 256)) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        RE = RunEngine({}, call_returns_result=False)
        det, _ = detector("pil", tmp / "beamline", shape)
        t0 = time.perf_counter()
        recorded = [image_run(RE, det, frames_per_run, sample=f"s{i}") for i in range(runs)]
        pack_dir = write_pack(tmp / "pack", recorded)
        build = time.perf_counter() - t0
        catalog = open_catalog(directory=tmp / "catalog")
        try:
            t0 = time.perf_counter()
            report = ingest(catalog, open_pack(pack_dir))
            elapsed = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = ingest(catalog, open_pack(pack_dir))
            repeat = time.perf_counter() - t0
        finally:
            catalog.close()
    assert report.ok and again.ok and len(again.already) == runs, (report.lines(), again.lines())
    print(f"pack_build_s: {build:.2f}")
    print(f"ingest_runs: {len(report.ingested)}")
    print(f"ingest_frames: {sum(r.frames for r in report.ingested)}")
    print(f"ingest_s: {elapsed:.2f}")
    print(f"ingest_s_per_run: {elapsed / runs:.3f}")
    print(f"ingest_again_s: {repeat:.2f}")


if __name__ == "__main__":
    main()
