"""Read a databroker-pack directory into one checked document stream per run.

A pack (``databroker-pack``, https://github.com/bluesky/databroker-pack) holds:

- ``catalog.yml``: an intake catalog whose one source (``packed_catalog``) has the
  driver ``bluesky-msgpack-catalog`` or ``bluesky-jsonl-catalog``, the document files
  (``metadata.relative_paths``, globs relative to the pack) and a ``root_map`` from
  each Resource's ``root`` (a hash the pack wrote in place of the original root) to
  the directory of its files (absolute, or relative to the pack when copied into it);
- ``documents_manifest.txt``: the document files, relative to the pack, one a line;
- ``documents/<start uid>.msgpack`` (suitcase-msgpack: ``(name, document)`` pairs,
  numpy arrays encoded by msgpack-numpy, events and datums paged) or ``.jsonl``
  (suitcase-jsonl: one JSON ``[name, document]`` per line): one run per file;
- ``external_files_manifest_<root hash>.txt``: the external files of each root.

:func:`open_pack` reads the catalog file; :func:`load_run` decodes one run's file and
checks it is one Bluesky run; :func:`check_run` rewrites its Resources (each ``root``
mapped to where the files are now, each ``spec`` through the aliases) and checks
everything a catalog writer needs before anything is written: every datum names a
Resource of the run, every external reference of an event names a datum, every
Resource's file exists and holds the frames its datums address, and the documents pass
bluesky-tiled-plugins' own normalization and schema validation.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import msgpack
import msgpack_numpy
import yaml
from event_model import unpack_datum_page, unpack_event_page

from ..errors import CorruptFrameError, FrameSourceError, MissingMetadataError
from ..frames.hdf5 import open_hdf5
from ..schema.documents import check_uid, document_field

#: Document format per catalog driver a pack's ``catalog.yml`` names.
FORMATS = {"bluesky-msgpack-catalog": "msgpack", "bluesky-jsonl-catalog": "jsonl"}
#: Resource specs whose frames a catalog writer registers as one HDF5 array per
#: Resource (``/entry/data/data``, or the ``dataset`` resource keyword) that replay reads.
INGESTIBLE_SPECS = ("AD_HDF5", "AD_HDF5_SWMR")
#: The dataset of an area detector's HDF5 file.
DEFAULT_DATASET = "/entry/data/data"
#: Document types a pack holds.
DOCUMENT_NAMES = ("start", "descriptor", "event", "event_page", "resource", "datum", "datum_page", "stop")


class PackError(MissingMetadataError):
    """A pack directory, or a run in it, is not what databroker-pack writes (no catalog
    file, a file that does not decode, documents that are not one Bluesky run): the file,
    the document and the key at fault are named."""


@dataclass(frozen=True)
class Pack:
    """A databroker-pack directory, opened.

    Attributes
    ----------
    directory : Path
        The pack.
    document_files : tuple of Path
        One file per run.
    document_format : str
        ``msgpack`` or ``jsonl``.
    pack_root_map : dict
        Resource ``root`` -> directory of its files, from ``catalog.yml``.
    root_map : dict
        The user's old -> new directory, applied after ``pack_root_map`` (a whole root
        or any parent directory of it).
    spec_aliases : dict
        Resource spec -> one of :data:`INGESTIBLE_SPECS`.
    """

    directory: Path
    document_files: tuple[Path, ...]
    document_format: str
    pack_root_map: dict[str, str] = field(default_factory=dict)
    root_map: dict[str, str] = field(default_factory=dict)
    spec_aliases: dict[str, str] = field(default_factory=dict)

    def root(self, root: str) -> Path:
        """Where the files of a Resource with ``root`` are now: ``root`` through the
        pack's root map, then through the user's (exact or parent-directory match, the
        longest old directory first), made absolute against the pack."""
        located = self.pack_root_map.get(root, root)
        for old in sorted(self.root_map, key=len, reverse=True):
            for candidate in (Path(root), Path(located)):
                if candidate.is_relative_to(old):
                    return Path(self.root_map[old]) / candidate.relative_to(old)
        return (self.directory / located).absolute()


@dataclass(frozen=True)
class ExternalFile:
    """The file of one Resource: ``root / resource_path``."""

    resource_uid: str
    root: Path
    resource_path: str

    @property
    def path(self) -> Path:
        """The file, joined as the catalog writer joins it (an absolute
        ``resource_path`` is taken relative to ``root``)."""
        return self.root / self.resource_path.lstrip("/")


@dataclass
class PackRun:
    """One run of a pack: its documents (pages unpacked, in file order; after
    :func:`check_run`, Resources rewritten and a missing stop added), the file they came
    from, and after :func:`check_run` its external files and counts."""

    source: Path
    documents: list[tuple[str, dict]]
    files: list[ExternalFile] = field(default_factory=list)
    events: int = 0
    frames: int = 0
    closed_by_ingest: bool = False

    @property
    def start(self) -> dict:
        return self.documents[0][1]

    @property
    def uid(self) -> str:
        return self.start["uid"]

    @property
    def stop(self) -> dict | None:
        name, doc = self.documents[-1]
        return doc if name == "stop" else None


def open_pack(directory: str | Path, *, root_map: Mapping[str, str] | None = None,
              spec_aliases: Mapping[str, str] | None = None) -> Pack:
    """Open the pack in ``directory``.

    Parameters
    ----------
    directory : path
        A databroker-pack directory (it holds ``catalog.yml``).
    root_map : mapping, optional
        Old directory -> new directory, for external files moved since the pack was
        written (see :meth:`Pack.root`); a relative new directory is taken relative to
        the current directory.
    spec_aliases : mapping, optional
        Resource spec -> one of :data:`INGESTIBLE_SPECS`.

    Raises
    ------
    PackError
        ``directory`` has no readable ``catalog.yml``, the file is not a databroker-pack
        catalog (one source, a known driver) or names no document file.
    """
    directory = Path(directory).absolute()
    catalog_file = directory / "catalog.yml"
    try:
        catalog = yaml.safe_load(catalog_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PackError(f"{directory} is not a databroker-pack directory: cannot read {catalog_file.name} "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    source = _packed_source(catalog, catalog_file)
    driver = source.get("driver")
    if driver not in FORMATS:
        raise PackError(f"{catalog_file}: driver {driver!r} is not one of {', '.join(FORMATS)}")
    args = source.get("args") or {}
    pack_root_map = (args.get("root_map") or {}) if isinstance(args, Mapping) else args
    if not isinstance(pack_root_map, Mapping):
        raise PackError(f"{catalog_file}: args.root_map is {pack_root_map!r}, not a mapping")
    files = _document_files(directory, source)
    if not files:
        raise PackError(f"{directory}: the pack names no document file (documents_manifest.txt, "
                        "metadata.relative_paths of catalog.yml)")
    return Pack(directory, files, FORMATS[driver], {str(k): str(v) for k, v in pack_root_map.items()},
                {str(k): str(Path(v).absolute()) for k, v in (root_map or {}).items()}, dict(spec_aliases or {}))


def _packed_source(catalog: object, catalog_file: Path) -> Mapping:
    """The catalog file's source: ``packed_catalog``, or its only source."""
    sources = catalog.get("sources") if isinstance(catalog, Mapping) else None
    if not isinstance(sources, Mapping) or not sources:
        raise PackError(f"{catalog_file} has no 'sources' mapping")
    source = sources.get("packed_catalog") if len(sources) > 1 else next(iter(sources.values()))
    if not isinstance(source, Mapping):
        raise PackError(f"{catalog_file}: no source 'packed_catalog' among {sorted(sources)}")
    return source


def _document_files(directory: Path, source: Mapping) -> tuple[Path, ...]:
    """The document files: those of ``documents_manifest.txt`` (missing ones too: they
    are reported as runs that cannot be read), else the catalog's relative globs."""
    manifest = directory / "documents_manifest.txt"
    if manifest.is_file():
        return tuple(directory / line.strip() for line in manifest.read_text().splitlines() if line.strip())
    metadata = source.get("metadata") or {}
    patterns = (metadata.get("relative_paths") or []) if isinstance(metadata, Mapping) else []
    return tuple(sorted({path for pattern in patterns for path in directory.glob(str(pattern))}))


# -- one run: decoding and its structure ------------------------------------------------
def load_run(pack: Pack, path: Path) -> PackRun:
    """The run in the document file ``path`` of ``pack``, its pages unpacked, after
    checking that it is one Bluesky run: a start document first (with a safe uid), no
    second start, every descriptor and the stop (if any, last) of this run, only the
    document types a pack holds.

    Raises
    ------
    PackError
        The file cannot be read or decoded, or the documents are not one run (file,
        position and document named).
    UnsafeUidError
        The start document's uid is not a run uid.
    """
    documents = _unpacked(path, _decoded(path, pack.document_format))
    if not documents or documents[0][0] != "start":
        raise PackError(f"{path} is not a Bluesky run: it does not begin with a start document")
    uid = check_uid(documents[0][1].get("uid"), f"the uid of the start document of {path}")
    for number, (name, doc) in enumerate(documents[1:], start=2):
        what = f"{path} document {number} ({name})"
        if name == "start":
            raise PackError(f"{what}: a second start document (a pack holds one run per file)")
        if name == "stop" and number < len(documents):
            raise PackError(f"{what}: documents follow the stop document")
        if name == "descriptor":
            document_field(doc, "uid", str, what)
        if name in ("descriptor", "stop") and document_field(doc, "run_start", str, what) != uid:
            raise PackError(f"{what} belongs to run {doc['run_start']}, not to {uid}")
    return PackRun(path, documents)


def _decoded(path: Path, document_format: str) -> list[tuple[str, dict]]:
    """The ``(name, document)`` pairs of ``path``, decoded as suitcase wrote them."""
    try:
        with open(path, "rb") as file:
            if document_format == "msgpack":
                items = list(msgpack.Unpacker(file, object_hook=msgpack_numpy.decode, raw=False,
                                              strict_map_key=False))
            else:
                items = [json.loads(line) for line in file if line.strip()]
    except OSError as exc:
        raise PackError(f"cannot read document file {path}: {exc}") from None
    except Exception as exc:  # msgpack's and json's decoding errors have no common base
        raise PackError(f"{path} is not a {document_format} document file: {type(exc).__name__}: {exc}") from None
    for number, item in enumerate(items, start=1):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and item[0] in DOCUMENT_NAMES
                and isinstance(item[1], dict)):
            raise PackError(f"{path} item {number} is not a (document name, document) pair of a Bluesky run "
                            f"({', '.join(DOCUMENT_NAMES)}): {str(item)[:120]}")
    return [(name, doc) for name, doc in items]


def _unpacked(path: Path, documents: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """``documents`` with every event_page and datum_page unpacked, in order."""
    out = []
    for number, (name, doc) in enumerate(documents, start=1):
        unpack = {"event_page": (unpack_event_page, "event"), "datum_page": (unpack_datum_page, "datum")}.get(name)
        if unpack is None:
            out.append((name, doc))
            continue
        try:
            out.extend((unpack[1], single) for single in unpack[0](doc))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PackError(f"{path} document {number} ({name}) cannot be unpacked: {type(exc).__name__}: "
                            f"{exc}") from None
    return out


# -- one run: references, external files, normalization ------------------------------
def check_run(pack: Pack, run: PackRun) -> PackRun:
    """``run`` ready for a catalog writer: its Resources rewritten (root mapped, spec
    aliased), a stop document of ``exit_status='abort'`` added if it has none, after
    checking every reference, every external file and the whole document stream.

    Raises
    ------
    FrameSourceError
        A datum names no Resource of the run, an event names no datum, a Resource's spec
        is not one of :data:`INGESTIBLE_SPECS` (after the aliases) or its file is missing.
    CorruptFrameError
        A Resource's file is not an HDF5 file holding the frames its datums address.
    PackError
        A document lacks a key or fails bluesky-tiled-plugins' normalization or
        event-model's schema (document and reason named).
    """
    documents = [(name, _rewritten_resource(pack, doc) if name == "resource" else doc)
                 for name, doc in run.documents]
    closed = documents[-1][0] != "stop"
    if closed:
        documents.append(("stop", _abort_stop(run.start, documents)))
    resources = {doc["uid"]: doc for name, doc in documents if name == "resource"}
    datums = _datums(run, documents, resources)
    referenced = _referenced_datums(run, documents, datums)
    files = [ExternalFile(uid, Path(doc["root"]), doc["resource_path"]) for uid, doc in resources.items()]
    for file in files:
        _check_frames(file, resources[file.resource_uid], [d for d in datums.values()
                                                           if d["resource"] == file.resource_uid])
    _normalize(run, documents)
    frames = sum(_frame_per_point(resources[datums[d]["resource"]]) for d in referenced)
    events = sum(1 for name, _ in documents if name == "event")
    return replace(run, documents=documents, files=files, events=events, frames=frames, closed_by_ingest=closed)


def _rewritten_resource(pack: Pack, doc: dict) -> dict:
    """The Resource with its ``root`` where its files are now and its ``spec`` aliased
    onto an ingestible one."""
    what = f"resource {doc.get('uid', '?')}"
    document_field(doc, "uid", str, what)
    spec = document_field(doc, "spec", str, what)
    known = pack.spec_aliases.get(spec, spec)
    if known not in INGESTIBLE_SPECS:
        raise FrameSourceError(f"{what} has spec {spec!r}, which no frame handler of the catalog reads (known: "
                               f"{', '.join(INGESTIBLE_SPECS)}); give --spec-alias {spec}=KNOWN_SPEC if its files "
                               "are one of these")
    root = doc.get("root") or ""
    if not isinstance(root, str):
        raise PackError(f"{what}: 'root' is {root!r}, not text")
    document_field(doc, "resource_path", str, what)
    document_field(doc, "resource_kwargs", dict, what)
    return {**doc, "spec": known, "root": str(pack.root(root))}


def _datums(run: PackRun, documents: list[tuple[str, dict]], resources: Mapping[str, dict]) -> dict[str, dict]:
    """The run's datums by id, each checked to name a Resource of the run."""
    datums = {}
    for name, doc in documents:
        if name != "datum":
            continue
        datum_id = document_field(doc, "datum_id", str, f"a datum of {run.source}")
        resource = document_field(doc, "resource", str, f"datum {datum_id}")
        if resource not in resources:
            raise FrameSourceError(f"datum {datum_id} of run {run.uid} names resource {resource}, which is not in "
                                   "the run")
        datums[datum_id] = doc
    return datums


def _referenced_datums(run: PackRun, documents: list[tuple[str, dict]], datums: Mapping[str, dict]) -> list[str]:
    """The datum id of every external, unfilled reading of every event, each checked to
    be a datum of the run."""
    external = {}
    referenced = []
    for name, doc in documents:
        if name == "descriptor":
            what = f"descriptor {doc.get('uid', '?')}"
            keys = document_field(doc, "data_keys", dict, what)
            external[document_field(doc, "uid", str, what)] = [k for k, v in keys.items()
                                                               if isinstance(v, Mapping) and v.get("external")]
        elif name == "event":
            what = f"event {doc.get('uid', '?')} of run {run.uid}"
            descriptor = document_field(doc, "descriptor", str, what)
            if descriptor not in external:
                raise PackError(f"{what} names descriptor {descriptor}, which is not in the run")
            data = document_field(doc, "data", dict, what)
            filled = doc.get("filled") or {}
            for key in external[descriptor]:
                if filled.get(key):
                    continue
                datum_id = data.get(key)
                if not isinstance(datum_id, str) or datum_id not in datums:
                    raise FrameSourceError(f"{what} (seq_num {doc.get('seq_num')}) reads {key!r} from datum "
                                           f"{datum_id!r}, which the run never announces")
                referenced.append(datum_id)
    return referenced


def _frame_per_point(resource: Mapping) -> int:
    value = resource["resource_kwargs"].get("frame_per_point", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PackError(f"resource {resource['uid']}: frame_per_point is {value!r}, not a whole number >= 1")
    return value


def _check_frames(file: ExternalFile, resource: Mapping, datums: list[dict]) -> None:
    """Check that ``file`` exists and its dataset holds every frame its datums address
    (``point_number`` times ``frame_per_point``, as area-detector-handlers reads them)."""
    what = f"resource {file.resource_uid}"
    if not file.path.is_file():
        raise FrameSourceError(f"external file {file.path} of {what} is missing (its root in the pack is "
                               f"mapped to {file.root}; give --root-map OLD=NEW if the files moved)")
    per_point = _frame_per_point(resource)
    needed = 0
    for datum in datums:
        point = (datum.get("datum_kwargs") or {}).get("point_number")
        if isinstance(point, bool) or not isinstance(point, int) or point < 0:
            raise FrameSourceError(f"datum {datum['datum_id']} of {what} has point_number {point!r}, not a "
                                   "whole number >= 0")
        needed = max(needed, (point + 1) * per_point)
    dataset = resource["resource_kwargs"].get("dataset") or DEFAULT_DATASET
    if not isinstance(dataset, str):
        raise PackError(f"{what}: resource_kwargs.dataset is {dataset!r}, not an HDF5 path")
    try:
        with open_hdf5(file.path) as f:
            dset = f.get(dataset)
            shape = dset.shape if isinstance(dset, h5py.Dataset) else None
    except OSError as exc:
        raise CorruptFrameError(f"external file {file.path} of {what} is not a readable HDF5 file: {exc}") from None
    if shape is None or len(shape) != 3:
        raise CorruptFrameError(f"external file {file.path} of {what} has no stack of frames {dataset} "
                                f"({'absent' if shape is None else f'shape {shape}'})")
    if shape[0] < needed:
        raise CorruptFrameError(f"external file {file.path} of {what} holds {shape[0]} frames in {dataset}; its "
                                f"datums address {needed}")


def _normalize(run: PackRun, documents: list[tuple[str, dict]]) -> None:
    """Pass the documents through bluesky-tiled-plugins' normalizer, which converts them
    (Resource/Datum to StreamResource/StreamDatum) and validates each against the
    event-model schema as the catalog writer will, without writing anything."""
    from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer

    normalizer = RunNormalizer()
    for number, (name, doc) in enumerate(documents, start=1):
        try:
            normalizer(name, doc)
        except Exception as exc:  # jsonschema's ValidationError, KeyError, RuntimeError...: all say "invalid"
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PackError(f"run {run.uid} of {run.source}: document {number} ({name}) is not a valid Bluesky "
                            f"document: {type(exc).__name__}: {message}") from None


def _abort_stop(start: dict, documents: list[tuple[str, dict]]) -> dict:
    """The stop document of a run packed without one (recording interrupted)."""
    streams = {doc["uid"]: doc.get("name", "primary") for name, doc in documents if name == "descriptor"}
    counts: dict[str, int] = {}
    for name, doc in documents:
        if name == "event":
            stream = streams.get(doc.get("descriptor"), "primary")
            counts[stream] = counts.get(stream, 0) + 1
    last = max((doc.get("time", 0.0) for _, doc in documents if isinstance(doc.get("time"), (int, float))),
               default=time.time())
    return {"uid": str(uuid.uuid4()), "run_start": start["uid"], "time": last, "exit_status": "abort",
            "reason": "the pack holds no stop document (recording interrupted?); closed by xrd-bluesky ingest",
            "num_events": counts}


# -- copying --------------------------------------------------------------------------
def copied(run: PackRun, directory: Path) -> PackRun:
    """``run`` (checked) with its external files copied under ``directory`` (one
    subdirectory per Resource) and its Resources' roots pointing at the copies.

    Raises
    ------
    OSError
        A file cannot be copied (the copies made are left for the caller to remove).
    """
    roots = {file.resource_uid: directory / file.resource_uid for file in run.files}
    files = [replace(file, root=roots[file.resource_uid]) for file in run.files]
    for old, new in zip(run.files, files):
        new.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(old.path, new.path)
    documents = [(name, {**doc, "root": str(roots[doc["uid"]])} if name == "resource" else doc)
                 for name, doc in run.documents]
    return replace(run, documents=documents, files=files)
