"""The ophyd-async test detector (``tests/devices/ophyd_async_detector.py``) through a RunEngine.

ophyd-async's own ``SimBlobDetector`` writes frames chosen by the test into HDF5; the
documents are ophyd-async's own (StreamResource / StreamDatum, events without data).
These tests read the frames back as a consumer would, from the StreamResource uri and
dataset and the StreamDatum indices, and compare them with what the frame source
returned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp
import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.utils import Msg
from devices.ophyd_async_detector import FramesPatternFile, make_sim_detector
from ophyd_async.core import soft_signal_rw
from ophyd_async.sim import SimBlobDetector, SimMotor

SHAPE = (407, 487)  # Pilatus 100K
Documents = list[tuple[str, dict[str, Any]]]


class RandomFrames:
    """Frame source: seeded random int32 frames, remembered in the order returned.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` of the frames.
    seed : int, optional
        Seed of the generator.
    """

    def __init__(self, shape: tuple[int, int], seed: int = 0) -> None:
        self.shape = shape
        self.rng = np.random.default_rng(seed)
        self.returned: list[np.ndarray] = []

    def __call__(self) -> np.ndarray:
        """Return the next frame: Pilatus-like counts, gaps (-1) and both int32 extremes."""
        frame = self.rng.integers(0, 2**20, size=self.shape, dtype=np.int32)
        frame[:, 100:107] = -1
        frame[0, 0], frame[0, 1] = np.iinfo(np.int32).min, np.iinfo(np.int32).max
        self.returned.append(frame)
        return frame


@pytest.fixture
def RE() -> RunEngine:
    """A fresh RunEngine (as conftest's), defined here so this module needs nothing else from conftest."""
    return RunEngine({}, call_returns_result=False)


def collect(RE: RunEngine) -> Documents:
    """Subscribe a list to ``RE``; every document is appended as ``(name, doc)``."""
    docs: Documents = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return docs


def of(docs: Documents, name: str) -> list[dict[str, Any]]:
    """The documents called ``name``, in order."""
    return [doc for n, doc in docs if n == name]


def read_stream(docs: Documents, data_key: str) -> np.ndarray:
    """Read ``data_key``'s data back with h5py, as the StreamResource and StreamDatum documents say.

    Parameters
    ----------
    docs : Documents
        One run's documents.
    data_key : str
        Data key of a stream resource, e.g. ``"det"``.

    Returns
    -------
    numpy.ndarray
        The rows ``indices.start:indices.stop`` of every StreamDatum of that data
        key, concatenated in document order.
    """
    resources = {doc["uid"]: doc for doc in of(docs, "stream_resource") if doc["data_key"] == data_key}
    rows = []
    for datum in of(docs, "stream_datum"):
        resource = resources.get(datum["stream_resource"])
        if resource is None:
            continue
        assert resource["uri"].startswith("file://localhost/")
        with h5py.File(urlparse(resource["uri"]).path, "r", swmr=True) as f:
            rows.append(f[resource["parameters"]["dataset"]][datum["indices"]["start"] : datum["indices"]["stop"]])
    return np.concatenate(rows)


def test_count_reads_back_the_frames(RE: RunEngine, tmp_path: Path) -> None:
    """count(num=3): ophyd-async's documents, a 407 x 487 int32 StreamResource, the frames in one file."""
    frames = RandomFrames(SHAPE)
    model = soft_signal_rw(str, initial_value="Pilatus", name="det-model")
    det = make_sim_detector("det", frames, SHAPE, tmp_path, config_sigs=[model])
    assert isinstance(det, SimBlobDetector)
    docs = collect(RE)

    RE(bp.count([det], num=3))

    names = [name for name, _ in docs]
    print("\ndocuments:", names)
    per_event = ["stream_datum", "stream_datum", "event"]
    assert names == ["start", "descriptor", "stream_resource", "stream_resource", *per_event * 3, "stop"]
    assert of(docs, "stop")[0]["exit_status"] == "success"

    (descriptor,) = of(docs, "descriptor")
    data_keys = descriptor["data_keys"]
    print("data keys:",
          {k: {f: v[f] for f in ("shape", "dtype", "dtype_numpy", "external")} for k, v in data_keys.items()})
    assert set(data_keys) == {"det", "det-sum"}
    assert data_keys["det"]["shape"] == [1, *SHAPE]  # leading 1: collections per event
    assert data_keys["det"]["dtype_numpy"] == "<i4"
    assert data_keys["det"]["external"] == data_keys["det-sum"]["external"] == "STREAM:"
    assert data_keys["det-sum"]["dtype_numpy"] == "<i8"
    configuration = descriptor["configuration"]["det"]
    print("configuration:", configuration["data"])
    assert configuration["data"] == {"det-model": "Pilatus"}  # SimBlobDetector has no acquire_time
    assert configuration["data_keys"]["det-model"]["dtype"] == "string"
    assert all(event["data"] == {} for event in of(docs, "event"))  # everything is in the file

    resources = of(docs, "stream_resource")
    assert {r["uri"] for r in resources} == {f"file://localhost{(tmp_path / 'det_00000.h5').resolve().as_posix()}"}
    assert {r["data_key"]: r["parameters"]["dataset"] for r in resources} == {"det": "/entry/data/data",
                                                                              "det-sum": "/entry/sum"}
    assert [d["seq_nums"] for d in of(docs, "stream_datum")[::2]] == [{"start": i, "stop": i + 1} for i in (1, 2, 3)]

    back = read_stream(docs, "det")
    assert back.dtype == np.int32 and back.shape == (3, *SHAPE)
    np.testing.assert_array_equal(back, np.stack(frames.returned))
    np.testing.assert_array_equal(read_stream(docs, "det-sum"), [f.sum(dtype=np.int64) for f in frames.returned])


def test_motor_moves_between_counts_in_one_run(RE: RunEngine, tmp_path: Path) -> None:
    """Move ``arm_x`` between two trigger_and_read([det, arm_x]): two events, one file."""
    frames = RandomFrames(SHAPE, seed=1)
    det = make_sim_detector("det", frames, SHAPE, tmp_path)
    arm_x = SimMotor(name="arm_x")
    call_in_bluesky_event_loop(arm_x.connect())
    docs = collect(RE)

    @bpp.stage_decorator([det, arm_x])
    @bpp.run_decorator()
    def two_positions() -> Generator[Msg, Any, None]:
        for x in (-3.0, 4.5):
            yield from bps.mv(arm_x, x)
            yield from bps.trigger_and_read([det, arm_x])

    RE(two_positions())

    (descriptor,) = of(docs, "descriptor")
    print("\ndata keys:", sorted(descriptor["data_keys"]),
          "configuration:", {k: sorted(v["data"]) for k, v in descriptor["configuration"].items()})
    events = of(docs, "event")
    assert [e["data"] for e in events] == [{"arm_x": -3.0}, {"arm_x": 4.5}]
    assert len({r["uri"] for r in of(docs, "stream_resource")}) == 1
    assert len(of(docs, "stream_resource")) == 2  # det, det-sum
    np.testing.assert_array_equal(read_stream(docs, "det"), np.stack(frames.returned))


READ_IN_CHILD = """
import h5py, json, sys
try:
    with h5py.File(sys.argv[1], "r", **json.loads(sys.argv[2])) as f:
        print(f["/entry/data/data"].shape[0])
except OSError as exc:
    print(exc)
"""


def test_file_readable_while_the_detector_holds_it_open(RE: RunEngine, tmp_path: Path) -> None:
    """Mid-run (file open for SWMR writing): this process reads it plainly; another needs swmr=True."""
    det = make_sim_detector("det", RandomFrames(SHAPE), SHAPE, tmp_path)
    docs = collect(RE)
    seen: dict[str, object] = {}

    def read_now(path: str) -> None:
        for label, flags in {"plain": {}, "swmr": {"swmr": True}}.items():
            with h5py.File(path, "r", **flags) as f:
                seen[f"this process, {label}"] = f["/entry/data/data"].shape[0]
            child = subprocess.run(
                [sys.executable, "-c", READ_IN_CHILD, path, json.dumps(flags)],
                capture_output=True, text=True, check=True,
            )
            seen[f"other process, {label}"] = child.stdout.strip()
        try:
            h5py.File(path, "r", locking=False).close()
        except OSError as exc:
            seen["this process, locking=False"] = str(exc)

    @bpp.stage_decorator([det])
    @bpp.run_decorator()
    def plan() -> Generator[Msg, Any, None]:
        for _ in range(2):
            yield from bps.trigger_and_read([det])
        read_now(urlparse(of(docs, "stream_resource")[0]["uri"]).path)

    RE(plan())

    print("\nmid-run reads:", json.dumps(seen, indent=1))
    assert seen["this process, plain"] == seen["this process, swmr"] == 2
    assert seen["other process, swmr"] == "2"
    assert "already open for write" in seen["other process, plain"]
    assert "file locking flag values don't match" in seen["this process, locking=False"]


def test_a_second_run_writes_a_new_file(RE: RunEngine, tmp_path: Path) -> None:
    """Each run gets its own file, so earlier runs' documents keep pointing at their frames."""
    frames = RandomFrames(SHAPE)
    det = make_sim_detector("det", frames, SHAPE, tmp_path)
    docs = collect(RE)
    RE(bp.count([det], num=2))
    first_run = list(docs)
    RE(bp.count([det], num=2))
    second_run = docs[len(first_run) :]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det_00000.h5", "det_00001.h5"]
    np.testing.assert_array_equal(read_stream(first_run, "det"), np.stack(frames.returned[:2]))
    np.testing.assert_array_equal(read_stream(second_run, "det"), np.stack(frames.returned[2:]))


def test_config_signal_without_a_name_is_refused(RE: RunEngine, tmp_path: Path) -> None:
    """Config signals keep their own names; an empty one would fail the descriptor schema."""
    with pytest.raises(ValueError, match="needs a name"):
        make_sim_detector("det", RandomFrames(SHAPE), SHAPE, tmp_path, config_sigs=[soft_signal_rw(str, "Pilatus")])


def test_a_frame_of_the_wrong_shape_or_dtype_is_refused(tmp_path: Path) -> None:
    """The file checks each frame against the shape and dtype its dataset announces."""
    frame = np.zeros(SHAPE, np.int32)
    pattern_file = FramesPatternFile(tmp_path / "f.h5", lambda: frame, SHAPE, np.dtype(np.int32))
    try:
        frame = np.zeros((SHAPE[1], SHAPE[0]), np.int32)
        with pytest.raises(ValueError, match="shape"):
            pattern_file.write_image_to_file(1.0)
        frame = np.zeros(SHAPE, np.float64)
        with pytest.raises(TypeError, match="float64"):
            pattern_file.write_image_to_file(1.0)
        frame = np.zeros(SHAPE, np.uint16)
        pattern_file.write_image_to_file(1.0)
        assert pattern_file.data.shape == (1, *SHAPE)
    finally:
        pattern_file.close()
