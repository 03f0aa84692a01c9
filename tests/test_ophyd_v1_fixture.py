"""The ophyd v1 area-detector test double behaves like a real detector under bluesky.

``devices.ophyd_v1_detector.make_fake_pilatus`` builds a ``SingleTrigger`` Pilatus with
an ``HDF5Plugin`` + ``FileStoreHDF5IterativeWrite`` file plugin through
``ophyd.sim.make_fake_device``; the test side plays the IOC and writes the HDF5 files.
These tests check that ``count`` runs through ophyd's own stage / trigger / FileStore
code and that ``AreaDetectorHDF5Handler`` reads back exactly the frames written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from area_detector_handlers.handlers import AreaDetectorHDF5Handler
from bluesky import RunEngine
from bluesky.plans import count
from devices.ophyd_v1_detector import make_fake_pilatus

SHAPE = (407, 487)


class FrameSource:
    """Distinct int32 frames, remembered in the order they are handed out."""

    def __init__(self, shape: tuple[int, int] = SHAPE, seed: int = 0) -> None:
        self.shape = shape
        self.rng = np.random.default_rng(seed)
        self.given: list[np.ndarray] = []

    def __call__(self) -> np.ndarray:
        frame = self.rng.integers(0, 2**20, size=self.shape, dtype=np.int32)
        self.given.append(frame)
        return frame


def run_count(det, num: int) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    RE = RunEngine({}, call_returns_result=False)
    RE(count([det], num=num), lambda name, doc: docs.append((name, doc)))
    return docs


def read_back(docs: list[tuple[str, dict]], key: str) -> list[np.ndarray]:
    """Resolve every event's datum id of ``key`` with AreaDetectorHDF5Handler."""
    resources = {d["uid"]: d for n, d in docs if n == "resource"}
    datums = {d["datum_id"]: d for n, d in docs if n == "datum"}
    handlers: dict[str, AreaDetectorHDF5Handler] = {}
    out = []
    for name, doc in docs:
        if name != "event":
            continue
        datum = datums[doc["data"][key]]
        res = resources[datum["resource"]]
        if res["uid"] not in handlers:
            path = os.path.join(res["root"], res["resource_path"])
            handlers[res["uid"]] = AreaDetectorHDF5Handler(path, **res["resource_kwargs"])
        out.append(np.asarray(handlers[res["uid"]](**datum["datum_kwargs"])))
    for h in handlers.values():
        h.close()
    return out


@pytest.mark.parametrize("frames_per_point", [1, 2])
def test_count_round_trips_through_ad_hdf5_handler(tmp_path: Path, frames_per_point: int) -> None:
    frames = FrameSource()
    det = make_fake_pilatus(
        "det", frames, tmp_path, model="Pilatus3 1M", frames_per_point=frames_per_point
    )
    docs = run_count(det, num=3)

    names = [n for n, _ in docs]
    assert names == [
        "start", "descriptor", "resource", "datum", "event",
        "datum", "event", "datum", "event", "stop",
    ]
    assert docs[-1][1]["exit_status"] == "success"

    (resource,) = [d for n, d in docs if n == "resource"]
    assert resource["spec"] == "AD_HDF5"
    assert resource["root"] == str(tmp_path.resolve())
    assert resource["resource_kwargs"] == {"frame_per_point": frames_per_point}
    # The file ophyd announces is the one the plugin opened from its template.
    (written,) = det.fake_ioc.files_written
    assert os.path.join(resource["root"], resource["resource_path"]) == written
    assert Path(written).is_file()

    datums = [d for n, d in docs if n == "datum"]
    assert [d["datum_kwargs"] for d in datums] == [{"point_number": i} for i in range(3)]
    events = [d for n, d in docs if n == "event"]
    assert [e["data"]["det_image"] for e in events] == [d["datum_id"] for d in datums]

    descriptor = docs[1][1]
    key = descriptor["data_keys"]["det_image"]
    assert key["external"] == "FILESTORE:"
    assert key["dtype_numpy"] == "<i4"
    assert tuple(key["shape"]) == (frames_per_point, *SHAPE)
    config = descriptor["configuration"]["det"]["data"]
    assert config["det_cam_model"] == "Pilatus3 1M"
    assert config["det_cam_manufacturer"] == "Dectris"
    assert config["det_cam_acquire_time"] == 1.0
    assert config["det_cam_num_images"] == frames_per_point

    got = read_back(docs, "det_image")
    assert len(frames.given) == 3 * frames_per_point
    for i, block in enumerate(got):
        expected = np.stack(frames.given[i * frames_per_point : (i + 1) * frames_per_point])
        assert block.dtype == np.int32
        np.testing.assert_array_equal(block, expected)

    # Unstaged like after a real run: acquisition stopped, capture closed.
    assert det.cam.acquire.get() == 0
    assert det.hdf5.capture.get() == 0


def test_spec_alias_and_second_run_gets_a_new_file(tmp_path: Path) -> None:
    frames = FrameSource(shape=(5, 7))
    det = make_fake_pilatus("pil", frames, tmp_path, spec="AD_HDF5_PILATUS")
    first = run_count(det, num=2)
    second = run_count(det, num=1)

    res1 = next(d for n, d in first if n == "resource")
    res2 = next(d for n, d in second if n == "resource")
    assert res1["spec"] == res2["spec"] == "AD_HDF5_PILATUS"
    assert res1["resource_path"] != res2["resource_path"]
    assert len(det.fake_ioc.files_written) == 2

    got = read_back(first, "pil_image") + read_back(second, "pil_image")
    np.testing.assert_array_equal(np.concatenate(got), np.stack(frames.given))


def test_frames_source_error_fails_the_run_without_hanging(tmp_path: Path) -> None:
    def broken() -> np.ndarray:
        raise RuntimeError("detector exploded")

    det = make_fake_pilatus("det", broken, tmp_path)
    with pytest.raises(RuntimeError, match="detector exploded"):
        run_count(det, num=1)
    assert det.cam.acquire.get() == 0
    assert det.hdf5.capture.get() == 0


def test_describe_before_first_trigger_uses_sensor_shape(tmp_path: Path) -> None:
    det = make_fake_pilatus("det", FrameSource(), tmp_path, frames_per_point=2)
    assert tuple(det.make_data_key()["shape"]) == (2, 619, 487)


@pytest.mark.parametrize("bad", [lambda: np.zeros(3, np.int32), lambda: np.zeros((1, 2, 3), np.int32)])
def test_frames_must_be_2d(tmp_path: Path, bad: Callable[[], np.ndarray]) -> None:
    det = make_fake_pilatus("det", bad, tmp_path)
    with pytest.raises(ValueError, match="2D"):
        run_count(det, num=1)
