"""Simulated area detector writing frames to HDF5 and announcing them with
StreamResource / StreamDatum documents, as real area detectors do."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
from numcodecs import Blosc
from ophyd import Component as Cpt
from ophyd import Device
from ophyd.status import Status

from ..frames.chunk_codecs import codec_pool
from ..science.sim.image_formation import DetectorResponse, detect
from .signals import UnitSignal

#: HDF5 dataset holding the frames, stacked along the first axis.
FRAME_DATASET = "/entry/data/data"
#: How frames are compressed: byte-shuffle and LZ4 by Blosc, level 1, one chunk a frame.
_CODEC = Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE)


class SimAreaDetector(Device):
    """A photon-counting area detector.

    Each trigger records ``num_frames`` frames of ``acquire_time`` seconds; the
    expected photon image comes from ``render(exposure_s)`` (the beamline's scene),
    detection (gain, noise, defects, depth) from ``response``. Frames go to one HDF5
    file per staging in ``data_dir``, one chunk per frame compressed with byte-shuffle and
    LZ4 (Blosc; about 4x for photon-counting frames, faster than bitshuffle on CPUs
    without AVX2; reading needs ``hdf5plugin`` imported); the data
    key ``<name>_image`` is external (``STREAM:``), with shape ``[num_frames, rows, columns]``.
    """

    acquire_time = Cpt(UnitSignal, value=1.0, units="s", kind="config")
    num_frames = Cpt(UnitSignal, value=1, units="", kind="config")
    model = Cpt(UnitSignal, value="", units="", kind="config")
    max_count = Cpt(UnitSignal, value=0, units="counts", kind="config")

    def __init__(self, *args, render: Callable[[float], np.ndarray], response: DetectorResponse,
                 data_dir: str | Path, rng: np.random.Generator, **kwargs):
        super().__init__(*args, **kwargs)
        self._render = render
        self.response = response
        self._data_dir = Path(data_dir)
        self._rng = rng
        self.model.put(response.detector)
        self.max_count.put(response.max_count)
        self._file: Path | None = None
        self._resource_uid: str | None = None
        self._frames_written = 0
        self._frames_announced = 0
        self._pending: deque = deque()
        self._prerendered: list[bytes] | None = None  # compressed chunks
        self._next_prerendered = 0

    def use_prerendered(self, frames: np.ndarray | None) -> None:
        """Record these frames (cycled, ``num_frames`` per trigger) instead of rendering
        and detecting new ones — for throughput tests at detector frame rates; None
        goes back to rendering. They are compressed here, once: a detector delivers its
        frames compressed by its own hardware, so a throughput test does not time it."""
        if frames is not None and tuple(frames.shape[1:]) != tuple(self.response.shape):
            raise ValueError(f"pre-rendered frames have shape {frames.shape[1:]}, detector {self.response.shape}")
        self._prerendered = None if frames is None else _compressed(frames)
        self._next_prerendered = 0

    @property
    def image_key(self) -> str:
        return f"{self.name}_image"

    def stage(self):
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._resource_uid = str(uuid.uuid4())
        self._file = self._data_dir / f"{self.name}_{self._resource_uid}.h5"
        self._frames_written = self._frames_announced = 0
        self._pending.clear()
        return super().stage()

    def unstage(self):
        self._file = None
        return super().unstage()

    def trigger(self) -> Status:
        if self._file is None:
            raise RuntimeError(f"{self.name} must be staged before it is triggered")
        exposure = float(self.acquire_time.get())
        n = int(self.num_frames.get())
        if self._prerendered is None:
            expected = self._render(exposure)
            chunks = _compressed([detect(expected, self.response, exposure, self._rng) for _ in range(n)])
        else:
            take = (self._next_prerendered + np.arange(n)) % len(self._prerendered)
            self._next_prerendered = int(take[-1]) + 1
            chunks = [self._prerendered[i] for i in take]
        self._append(chunks)
        status = Status(obj=self)
        status.set_finished()
        return status

    def _append(self, chunks: Sequence[bytes]) -> None:
        """Append frames, compressed as the dataset's filter stores them (:func:`_compressed`)."""
        rows, cols = self.response.shape
        with h5py.File(self._file, "a") as f:
            if FRAME_DATASET not in f:
                f.create_dataset(FRAME_DATASET, shape=(0, rows, cols), maxshape=(None, rows, cols),
                                 dtype="<i4", chunks=(1, rows, cols),
                                 **hdf5plugin.Blosc(cname=_CODEC.cname, clevel=_CODEC.clevel, shuffle=_CODEC.shuffle))
                self._pending.append(("stream_resource", {
                    "uid": self._resource_uid,
                    "data_key": self.image_key,
                    "mimetype": "application/x-hdf5",
                    "uri": self._file.resolve().as_uri().replace("file://", "file://localhost", 1),
                    "parameters": {"dataset": FRAME_DATASET, "chunk_shape": [1, rows, cols]},
                }))
            dset = f[FRAME_DATASET]
            start = dset.shape[0]
            dset.resize(start + len(chunks), axis=0)
            for i, chunk in enumerate(chunks):
                dset.id.write_direct_chunk((start + i, 0, 0), chunk)
        self._frames_written += len(chunks)

    def describe(self):
        desc = super().describe()
        rows, cols = self.response.shape
        desc[self.image_key] = {
            "source": f"SIM:{self.name}",
            "dtype": "array",
            "dtype_numpy": "<i4",
            "shape": [int(self.num_frames.get()), rows, cols],
            "external": "STREAM:",
            "units": "counts",
        }
        return desc

    def collect_asset_docs(self, index: int | None = None) -> Iterator[tuple[str, dict]]:
        """Yield the StreamResource (once per file) and a StreamDatum for the events
        whose frames were written since the last call."""
        while self._pending:
            yield self._pending.popleft()
        n = int(self.num_frames.get())
        start, stop = self._frames_announced // n, self._frames_written // n
        if stop > start:
            yield "stream_datum", {
                "uid": f"{self._resource_uid}/{start}",
                "stream_resource": self._resource_uid,
                "descriptor": "",
                "indices": {"start": start, "stop": stop},
                "seq_nums": {"start": 0, "stop": 0},
            }
            self._frames_announced = stop * n

    def get_index(self) -> int:
        """Number of events' worth of frames written."""
        return self._frames_written // int(self.num_frames.get())


def _compressed(frames: Sequence[np.ndarray]) -> list[bytes]:
    """Each frame as the dataset's Blosc filter would store it, compressed on every core
    (HDF5's filter pipeline compresses on one, holding Python's global lock): the chunks
    are written as they are stored, and any HDF5 reader with the filter reads them."""
    return list(codec_pool().map(lambda frame: _CODEC.encode(np.ascontiguousarray(frame, "<i4")), frames))
