"""Write databroker-pack directories of runs recorded with the ecosystem's devices.

Runs come from a RunEngine and ophyd v1 area detectors (``make_fake_pilatus``: ophyd's
own Resource/Datum documents, HDF5 files at ``/entry/data/data`` written by h5py).
:func:`write_pack` lays them out as ``databroker-pack`` 0.3 does (its writer needs
databroker v1's ``databroker.core``, which databroker 2 no longer has, so the layout is
reproduced here from its ``export_run``, ``write_*`` and command-line code): documents
serialized by suitcase-msgpack or suitcase-jsonl as ``documents/<start uid>.<ext>``,
each Resource's ``root`` replaced by a salted hash, ``catalog.yml`` mapping the hashes
to the files' directories, ``documents_manifest.txt`` and one
``external_files_manifest_<hash>.txt`` per root; with ``copy_external`` the files go
to ``external_files/<hash>/`` inside the pack (``--copy-external``).
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections import defaultdict
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import suitcase.jsonl
import suitcase.msgpack
import yaml
from bluesky import RunEngine
from bluesky.plans import count, scan
from bluesky.utils import RequestAbort
from devices.ophyd_v1_detector import make_fake_pilatus
from ophyd.sim import det as sim_det
from ophyd.sim import motor as sim_motor

Documents = list[tuple[str, dict]]
SERIALIZERS = {"msgpack": suitcase.msgpack.Serializer, "jsonl": suitcase.jsonl.Serializer}
DRIVERS = {"msgpack": "bluesky-msgpack-catalog", "jsonl": "bluesky-jsonl-catalog"}


class Frames:
    """Distinct frames of ``shape`` (each filled with its number), remembered in order."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.given: list[np.ndarray] = []
        self._counter = itertools.count()

    def __call__(self) -> np.ndarray:
        frame = np.full(self.shape, next(self._counter), np.int32)
        self.given.append(frame)
        return frame


def record(RE: RunEngine, plan) -> Documents:
    """The documents of one run of ``plan`` (a plan that aborts is recorded as such)."""
    docs: Documents = []
    try:
        RE(plan, lambda name, doc: docs.append((name, doc)))
    except RequestAbort:
        pass
    return docs


def detector(name: str, write_dir: Path, shape: tuple[int, int], spec: str | None = None):
    """An ophyd v1 Pilatus writing HDF5 files under ``write_dir`` and its :class:`Frames`."""
    frames = Frames(shape)
    write_dir.mkdir(parents=True, exist_ok=True)
    return make_fake_pilatus(name, frames, write_dir, spec=spec, shape=shape), frames


def image_run(RE: RunEngine, det, num: int, **md) -> Documents:
    """``count([det], num)``: one Resource, ``num`` datums and events."""
    return record(RE, count([det], num=num, md=md))


def aborted_image_run(RE: RunEngine, det, num: int) -> Documents:
    """A run of ``det`` aborted after ``num`` events (exit_status ``abort``)."""
    @bpp.stage_decorator([det])
    @bpp.run_decorator(md={"plan_name": "aborted_count"})
    def plan():
        for _ in range(num):
            yield from bps.trigger_and_read([det])
        raise RequestAbort()

    return record(RE, plan())


def scalar_run(RE: RunEngine, num: int) -> Documents:
    """A motor scan of ophyd.sim's point detector: a run without frames."""
    return record(RE, scan([sim_det], sim_motor, -1, 1, num))


def root_hash(salt: bytes, root: str) -> str:
    """databroker-pack's key of ``root`` in the pack's root_map."""
    return hashlib.md5(str(root).encode() + salt).hexdigest()


def write_pack(directory: Path, runs: list[Documents], *, document_format: str = "msgpack",
               copy_external: bool = False, salt: bytes = b"xrd-bluesky-tests") -> Path:
    """Write ``runs`` as a databroker-pack directory (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[tuple[str, str], set[str]] = defaultdict(set)
    artifacts = []
    for documents in runs:
        with SERIALIZERS[document_format](str(directory), file_prefix="documents/{start[uid]}") as serializer:
            for name, doc in documents:
                if name == "resource":
                    unique_id = root_hash(salt, doc["root"])
                    files[(doc["root"], unique_id)].add(str(Path(doc["root"], doc["resource_path"])))
                    doc = {**doc, "root": unique_id}
                serializer(name, doc)
        artifacts.extend(serializer.artifacts["all"])
    (directory / "documents_manifest.txt").write_text(
        "".join(f"{Path(a).relative_to(directory.absolute())}\n" for a in artifacts))
    root_map = {}
    for (root, unique_id), paths in files.items():
        if copy_external:
            new_root = directory / "external_files" / unique_id
            copies = []
            for path in paths:
                target = new_root / Path(path).relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                copies.append(str(Path(shutil.copyfile(path, target)).relative_to(directory)))
            root_map[unique_id], paths = str(new_root.relative_to(directory)), copies
        else:
            root_map[unique_id] = root
        (directory / f"external_files_manifest_{unique_id}.txt").write_text("\n".join(sorted(paths)))
    relative = [f"./documents/*.{document_format}"]
    source = {"driver": DRIVERS[document_format],
              "args": {"paths": [str(directory.absolute() / p) for p in relative], "root_map": root_map},
              "metadata": {"generated_by": {"library": "databroker_pack", "version": "0.3.0"},
                           "relative_paths": relative}}
    with open(directory / "catalog.yml", "x") as file:
        yaml.dump({"sources": {"packed_catalog": source}}, file)
    return directory
