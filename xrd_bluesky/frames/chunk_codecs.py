"""Frames of an HDF5 stack decoded off Python's global interpreter lock, on every core.

HDF5's filter pipeline (through h5py) decompresses a dataset's chunks one after the
other while holding the global lock: a Pilatus 2M frame compressed by Blosc takes
about 8 ms, during which no other thread of the process runs (a live scan's
RunEngine, the catalog's uploads). When each frame is one chunk compressed by a codec
this module knows, the chunks are read as stored (``read_direct_chunk``) and decoded
in :func:`codec_pool`, whose codecs release the lock: about 1 ms a frame on 2 cores.

Known codecs (the filter pipeline of the dataset, in HDF5's order):

- Blosc (HDF5 filter 32001, any compressor and shuffle: the header says), as
  ADCompression and this package's simulator write it;
- deflate (gzip), with or without HDF5's byte shuffle before it.

Any other layout (several frames or part of a frame a chunk, bitshuffle/LZ4, other
filters, a virtual or external dataset, a chunk whose writer skipped a filter) is
read by h5py, as before: the frames are the same, only slower.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import h5py
import numcodecs.blosc
import numpy as np

from ..errors import CorruptFrameError

#: Filter id of Blosc, as registered with the HDF Group (hdf5plugin's ``Blosc``).
BLOSC_FILTER = 32001

#: A Blosc chunk starts with a 16-byte header: version, format version, flags and item
#: size (a byte each), then the decoded size, block size and stored size (uint32 LE).
_BLOSC_HEADER = struct.Struct("<4BIII")

Decoder = Callable[[bytes, np.ndarray], None]


@functools.cache
def codec_pool() -> ThreadPoolExecutor:
    """Threads, one per core, that compress and decompress frames (the codecs release
    the global interpreter lock)."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="frame-codec")


def _check_size(decoded: int, out: np.ndarray) -> None:
    if decoded != out.nbytes:
        raise CorruptFrameError(f"a chunk decodes to {decoded} bytes, a frame has {out.nbytes}")


def _blosc(chunk: bytes, out: np.ndarray) -> None:
    """Decode a Blosc chunk into ``out``, refusing one whose header does not describe it."""
    if len(chunk) < _BLOSC_HEADER.size:
        raise CorruptFrameError(f"a Blosc chunk of {len(chunk)} bytes is shorter than its header")
    *_, decoded, _block, stored = _BLOSC_HEADER.unpack_from(chunk)
    if stored != len(chunk):
        raise CorruptFrameError(f"a Blosc chunk of {len(chunk)} bytes says it has {stored}: truncated or corrupt")
    _check_size(decoded, out)
    numcodecs.blosc.decompress(chunk, out)


def _deflate(chunk: bytes, out: np.ndarray) -> None:
    raw = zlib.decompress(chunk)
    _check_size(len(raw), out)
    out.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, np.uint8)


def _shuffle_deflate(chunk: bytes, out: np.ndarray) -> None:
    """Deflate, then undo HDF5's byte shuffle (each byte of every value together)."""
    raw = zlib.decompress(chunk)
    _check_size(len(raw), out)
    out.reshape(-1).view(np.uint8).reshape(-1, out.itemsize)[:] = np.frombuffer(raw, np.uint8).reshape(
        out.itemsize, -1).T


#: Decoders by filter pipeline (filter ids, in the order HDF5 applies them on writing).
DECODERS: dict[tuple[int, ...], Decoder] = {
    (BLOSC_FILTER,): _blosc,
    (h5py.h5z.FILTER_DEFLATE,): _deflate,
    (h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE): _shuffle_deflate,
}


def chunk_decoder(dset: h5py.Dataset) -> Decoder | None:
    """The decoder of the chunks of the 3D stack ``dset`` if it stores one frame a chunk
    with a pipeline of :data:`DECODERS`, else None (h5py reads it)."""
    if dset.ndim != 3 or dset.chunks != (1, *dset.shape[1:]) or dset.is_virtual or dset.external \
            or dset.dtype.kind not in "iuf":
        return None
    plist = dset.id.get_create_plist()
    return DECODERS.get(tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters())))


def read_stack(dset: h5py.Dataset, start: int, stop: int, where: str) -> np.ndarray:
    """Frames ``start..stop-1`` of the 3D stack ``dset`` (at ``where``, for messages),
    shape ``(stop - start, rows, columns)``, in its dtype: decoded in :func:`codec_pool`
    where :func:`chunk_decoder` knows the chunks, else read by h5py.

    Raises
    ------
    CorruptFrameError
        A chunk's header contradicts its size or it decodes to more or fewer bytes than a
        frame (``where`` and the frame named; the codecs' own errors, e.g. Blosc's or
        zlib's, pass as they are).
    """
    decode = chunk_decoder(dset)
    if decode is None:
        return np.asarray(dset[start:stop])
    out = np.empty((stop - start, *dset.shape[1:]), dset.dtype)
    stored = [dset.id.read_direct_chunk((i, 0, 0)) for i in range(start, stop)]

    def decode_frame(i: int) -> None:
        try:
            decode(stored[i][1], out[i])
        except CorruptFrameError as exc:
            raise CorruptFrameError(f"{where}: frame {start + i}: {exc}") from exc

    filtered = np.array([not filter_mask for filter_mask, _ in stored])
    list(codec_pool().map(decode_frame, np.flatnonzero(filtered)))
    for i in np.flatnonzero(~filtered):  # the writer skipped a filter for these chunks: HDF5 knows which
        out[i] = dset[start + i]
    return out
