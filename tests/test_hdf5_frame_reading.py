"""Frame stacks as detectors compress them (Blosc, an Eiger's bitshuffle/LZ4, gzip) read
back as recorded, in any byte order, and the simulator's chunks, which it compresses
itself, read by any HDF5 reader with the Blosc filter (h5py with hdf5plugin here).
Stacks whose chunks :mod:`xrd_bluesky.frames.chunk_codecs` decodes itself read as
HDF5's own filter pipeline reads them, and a chunk it cannot decode is named."""

import h5py
import hdf5plugin
import numpy as np
import pytest
from numcodecs import Blosc

from xrd_bluesky.errors import CorruptFrameError
from xrd_bluesky.frames.chunk_codecs import chunk_decoder
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
    {"compression": "gzip", "shuffle": True},
    {},
])
@pytest.mark.parametrize("dtype", ["<i4", ">i4", "<u2", "<f4"])
@pytest.mark.parametrize("chunk_frames", [1, 2])
def test_frames_read_as_hdf5_stores_them(tmp_path, filters, dtype, chunk_frames):
    frames = photon_counts(dtype)
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=frames, chunks=(chunk_frames, *SHAPE[1:]), **filters)
    got = FrameRef(path, "data", 1).read(2)  # the second event of two frames
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, frames[2:4])


@pytest.mark.parametrize(("filters", "decoded_here"), [
    (hdf5plugin.Blosc(cname="lz4", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE), True),
    ({"compression": "gzip"}, True),
    ({"compression": "gzip", "shuffle": True}, True),
    (hdf5plugin.Bitshuffle(), False),  # no codec here: HDF5's filter reads it
    ({"compression": "gzip", "fletcher32": True}, False),  # a checksum only HDF5 verifies
    ({}, False),  # nothing to decode
])
def test_which_stacks_are_decoded_off_the_global_lock(tmp_path, filters, decoded_here):
    """One frame a chunk with a known pipeline is decoded here; several frames a chunk
    never are, whatever the filter."""
    with h5py.File(tmp_path / "frames.h5", "w") as f:
        one = f.create_dataset("one", data=photon_counts(), chunks=(1, *SHAPE[1:]), **filters)
        two = f.create_dataset("two", data=photon_counts(), chunks=(2, *SHAPE[1:]), **filters)
        assert (chunk_decoder(one) is not None) == decoded_here
        assert chunk_decoder(two) is None


def _blosc_stack(path, frames):
    with h5py.File(path, "w") as f:
        return f.create_dataset("data", data=frames, chunks=(1, *SHAPE[1:]),
                                **hdf5plugin.Blosc(cname="lz4", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE)).name


def test_a_truncated_or_foreign_sized_chunk_is_named_with_its_frame(tmp_path):
    """A Blosc chunk cut short, or holding a frame of another size, is refused with the
    file and frame named, not decoded into a frame it does not fill."""
    frames = photon_counts()
    path = tmp_path / "frames.h5"
    _blosc_stack(path, frames)
    codec = Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE)
    with h5py.File(path, "a") as f:
        f["data"].id.write_direct_chunk((1, 0, 0), codec.encode(frames[1])[:-100])
        f["data"].id.write_direct_chunk((3, 0, 0), codec.encode(frames[3][:-1]))
    with pytest.raises(CorruptFrameError, match=r"frames.h5:data: frame 1: .*truncated"):
        FrameRef(path, "data", 1).read(1)
    with pytest.raises(CorruptFrameError, match=r"frame 3: .*decodes to 12096 bytes, a frame has 12288"):
        FrameRef(path, "data", 3).read(1)
    np.testing.assert_array_equal(FrameRef(path, "data", 2).read(1), frames[2:3])


def test_a_chunk_stored_without_its_filter_reads_as_written(tmp_path):
    """A writer may store a chunk with a filter skipped (its filter mask says which):
    HDF5 reads that chunk as it is, and so does this reader."""
    frames = photon_counts()
    path = tmp_path / "frames.h5"
    _blosc_stack(path, frames)
    with h5py.File(path, "a") as f:
        f["data"].id.write_direct_chunk((2, 0, 0), frames[2].tobytes(), filter_mask=1)
    np.testing.assert_array_equal(FrameRef(path, "data", 0).read(5), frames)


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
