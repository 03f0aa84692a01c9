"""Read detector frames announced by StreamResource / StreamDatum documents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other detector filters)
import numpy as np

from ..errors import CorruptFrameError, MissingMetadataError


@dataclass(frozen=True)
class FrameRef:
    """Where the frames of one event live: an HDF5 dataset and the event's index."""

    path: Path
    dataset: str
    index: int

    def read(self, frames_per_event: int) -> np.ndarray:
        """The event's frames, shape ``(frames_per_event, rows, columns)``."""
        start = self.index * frames_per_event
        try:
            with h5py.File(self.path, "r") as f:
                dset = f[self.dataset]
                if dset.shape[0] < start + frames_per_event:
                    raise CorruptFrameError(
                        f"{self.path}:{self.dataset} holds {dset.shape[0]} frames, "
                        f"event {self.index} needs frames {start}-{start + frames_per_event - 1}")
                return np.asarray(dset[start:start + frames_per_event])
        except CorruptFrameError:
            raise
        except (OSError, KeyError) as exc:
            raise CorruptFrameError(f"cannot read frames from {self.path}:{self.dataset}: {exc}") from exc


def path_from_uri(uri: str) -> Path:
    """Local path of a ``file://[host]/path`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise CorruptFrameError(f"frame URI {uri!r} is not a local file")
    return Path(unquote(parsed.path))


class StreamFrames:
    """Resolve StreamDatum documents to :class:`FrameRef` per event sequence number."""

    def __init__(self) -> None:
        self._resources: dict[str, dict] = {}

    def stream_resource(self, doc: dict) -> None:
        self._resources[doc["uid"]] = doc

    def refs(self, doc: dict) -> tuple[str, list[tuple[int, FrameRef]]]:
        """(data key, [(seq_num, frame reference), ...]) of a StreamDatum."""
        resource = self._resources.get(doc["stream_resource"])
        if resource is None:
            raise MissingMetadataError(
                f"stream_datum {doc['uid']} names unknown stream_resource {doc['stream_resource']}")
        path = path_from_uri(resource["uri"])
        dataset = resource["parameters"].get("dataset", "/entry/data/data")
        indices, seq = doc["indices"], doc["seq_nums"]
        refs = [(s, FrameRef(path, dataset, i))
                for i, s in zip(range(indices["start"], indices["stop"]), range(seq["start"], seq["stop"]))]
        return resource["data_key"], refs
