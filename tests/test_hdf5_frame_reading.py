"""Frame stacks as detectors compress them (Blosc, an Eiger's bitshuffle/LZ4, gzip) read
back as recorded, in any byte order, and the simulator's chunks, which it compresses
itself, read by any HDF5 reader with the Blosc filter (h5py with hdf5plugin here)."""

import h5py
import hdf5plugin
import numpy as np
import pytest

from xrd_bluesky.errors import CorruptFrameError
from xrd_bluesky.frames.reader import FrameRef
from xrd_bluesky.science.sim.image_formation import DetectorResponse
from xrd_bluesky.sim_devices.area_detector import FRAME_DATASET, SimAreaDetector

SHAPE = (5, 64, 48)


def photon_counts(dtype=np.int32) -> np.ndarray:
    """Frames of Poisson counts, as a photon-counting detector records them."""
    return np.random.default_rng(1).poisson(3.0, SHAPE).astype(dtype)


@pytest.mark.parametrize("filters", [
    hdf5plugin.Blosc(cname="lz4", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE),
    hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE),
    hdf5plugin.Bitshuffle(),  # an Eiger's bitshuffle/LZ4
    {"compression": "gzip"},
    {},
])
@pytest.mark.parametrize("dtype", ["<i4", ">i4", "<u2"])
def test_frames_read_as_hdf5_stores_them(tmp_path, filters, dtype):
    frames = photon_counts(dtype)
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=frames, chunks=(1, *SHAPE[1:]), **filters)
    got = FrameRef(path, "data", 1).read(2)  # the second event of two frames
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, frames[2:4])


def test_frames_the_simulator_writes_read_with_hdf5s_filter(tmp_path):
    """The simulated detector compresses its chunks itself: h5py's Blosc filter reads
    them back as the frames recorded, and so does the fast path."""
    response = DetectorResponse.simulate("Pilatus100k")
    frames = np.random.default_rng(2).poisson(2.0, (3, *response.shape)).astype(np.int32)
    det = SimAreaDetector(name="det", render=lambda exposure: np.zeros(response.shape), response=response,
                          data_dir=tmp_path, rng=np.random.default_rng(0))
    det.use_prerendered(frames)
    det.num_frames.put(3)
    det.stage()
    det.trigger()
    path = next(tmp_path.glob("det_*.h5"))
    det.unstage()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[FRAME_DATASET][()], frames)
    np.testing.assert_array_equal(FrameRef(path, FRAME_DATASET, 0).read(3), frames)


def test_a_corrupt_blosc_chunk_is_named(tmp_path):
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("data", data=photon_counts(), chunks=(1, *SHAPE[1:]),
                                **hdf5plugin.Blosc(cname="lz4", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE))
        dset.id.write_direct_chunk((2, 0, 0), b"\x02\x01" + bytes(40))  # a Blosc header of nonsense
    with pytest.raises(CorruptFrameError, match="frames.h5:data"):
        FrameRef(path, "data", 2).read(1)
