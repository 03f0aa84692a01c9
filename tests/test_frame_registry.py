"""The frame registry on the documents the ecosystem's detectors emit: ophyd v1
Resource/Datum (paged or not, spec aliases), ophyd-async StreamResource/StreamDatum
(with its sum dataset), images inline in events. The frames read back must be exactly
those the detector wrote."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count
from devices.ophyd_async_detector import make_sim_detector
from devices.ophyd_v1_detector import make_fake_pilatus
from event_model import pack_datum_page, pack_event_page
from ophyd.sim import DirectImage

from xrd_bluesky.errors import MissingMetadataError
from xrd_bluesky.frames import FrameRegistry

SHAPE = (16, 24)


class Frames:
    """Distinct frames, remembered in the order they were handed out."""

    def __init__(self):
        self.given: list[np.ndarray] = []
        self._counter = itertools.count()

    def __call__(self) -> np.ndarray:
        frame = np.full(SHAPE, next(self._counter), np.int32)
        frame[0, 0] = -1  # a gap pixel, as Pilatus detectors write
        self.given.append(frame)
        return frame


def record(RE, plan) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    RE(plan, lambda name, doc: docs.append((name, doc)))
    return docs


def feed(registry: FrameRegistry, docs) -> None:
    for name, doc in docs:
        if name not in ("start", "stop"):
            getattr(registry, name)(doc)


@pytest.mark.parametrize("frames_per_point", [1, 2])
def test_ophyd_v1_resource_and_datum_paged_or_not(tmp_path, frames_per_point):
    RE = RunEngine({}, call_returns_result=False)
    frames = Frames()
    det = make_fake_pilatus("pil", frames, tmp_path, frames_per_point=frames_per_point, shape=SHAPE)
    docs = record(RE, count([det], num=3))
    expected = np.stack(frames.given).reshape(3, frames_per_point, *SHAPE)
    plain = FrameRegistry("pil_image", roots=[tmp_path])
    feed(plain, docs)
    paged = FrameRegistry("pil_image", roots=[tmp_path])
    by_name = {}
    for name, doc in docs:
        by_name.setdefault(name, []).append(doc)
    for name in ("descriptor", "resource"):
        for doc in by_name[name]:
            getattr(paged, name)(doc)
    paged.datum_page(pack_datum_page(*by_name["datum"]))
    paged.event_page(pack_event_page(*by_name["event"]))
    for registry in (plain, paged):
        ready = registry.ready("primary")
        assert [fe.seq_num for fe in ready] == [1, 2, 3]
        np.testing.assert_array_equal(np.stack([fe.frames for fe in ready]), expected)
        assert registry.waiting_events() == []


def test_a_beamline_specific_spec_is_read_through_its_alias(tmp_path):
    RE = RunEngine({}, call_returns_result=False)
    frames = Frames()
    det = make_fake_pilatus("pil", frames, tmp_path, spec="AD_HDF5_Pilatus_6idb", shape=SHAPE)
    docs = record(RE, count([det], num=2))
    unknown = FrameRegistry("pil_image")
    feed(unknown, docs)
    flagged = unknown.ready("primary")
    assert all(fe.frames is None and "spec 'AD_HDF5_Pilatus_6idb'" in fe.error for fe in flagged)
    aliased = FrameRegistry("pil_image", spec_aliases={"AD_HDF5_Pilatus_6idb": "AD_HDF5"})
    feed(aliased, docs)
    np.testing.assert_array_equal(np.concatenate([fe.frames for fe in aliased.ready("primary")]),
                                  np.stack(frames.given))


def test_ophyd_async_frames_per_data_key_and_its_sum_ignored(tmp_path):
    RE = RunEngine({}, call_returns_result=False)
    frames = Frames()
    det = make_sim_detector("det", frames, SHAPE, tmp_path)
    docs = record(RE, count([det], num=3))
    assert sum(name == "stream_datum" for name, _ in docs) == 6  # frames and sums
    registry = FrameRegistry()  # the image key found: the only array of 2+ dimensions
    feed(registry, docs)
    ready = registry.ready("primary")
    np.testing.assert_array_equal(np.concatenate([fe.frames for fe in ready]), np.stack(frames.given))
    assert registry.image_key(ready[0].descriptor) == "det"
    assert registry.unmatched_frames() == [] and registry.waiting_events() == []


def test_inline_images_and_an_ambiguous_image_key(tmp_path):
    RE = RunEngine({}, call_returns_result=False)
    frames = Frames()
    one, two = DirectImage(name="cam", func=frames), DirectImage(name="cam2", func=frames)
    docs = record(RE, count([one], num=2))
    registry = FrameRegistry()
    feed(registry, docs)
    np.testing.assert_array_equal(np.concatenate([fe.frames for fe in registry.ready("primary")]),
                                  np.stack(frames.given))
    both = FrameRegistry()
    feed(both, record(RE, count([one, two], num=1)))
    with pytest.raises(MissingMetadataError, match=r"several image data keys \['cam2?_img', 'cam2?_img'\]"):
        both.ready("primary")
    named = FrameRegistry("cam2_img")
    feed(named, record(RE, count([one, two], num=1)))
    (fe,) = named.ready("primary")
    np.testing.assert_array_equal(fe.frames[0], frames.given[-1])
