"""Frames announced by Resource / Datum documents (ophyd v1 area detectors), read
through the ecosystem's own handlers (``area-detector-handlers``).

A resource's ``spec`` picks the handler (beamline-specific specs are aliased onto
known ones by the beamline description); its file is ``root`` joined with
``resource_path``, which must lie in one of the storage roots when any are given.
The frames are read by :func:`~.reader.read_datum_frames`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from area_detector_handlers.eiger import EigerHandler
from area_detector_handlers.handlers import (
    AreaDetectorHDF5Handler,
    AreaDetectorHDF5SingleHandler,
    AreaDetectorHDF5SWMRHandler,
    AreaDetectorTiffHandler,
    PilatusCBFHandler,
)

from ..errors import FrameSourceError, MissingMetadataError
from ..schema.documents import document_field, document_uid
from .reader import read_datum_frames

#: Handler class per known spec.
HANDLERS = {
    "AD_HDF5": AreaDetectorHDF5Handler,
    "AD_HDF5_SWMR": AreaDetectorHDF5SWMRHandler,
    "AD_HDF5_SINGLE": AreaDetectorHDF5SingleHandler,
    "AD_TIFF": AreaDetectorTiffHandler,
    "AD_CBF": PilatusCBFHandler,
    "AD_EIGER": EigerHandler,
    "AD_EIGER2": EigerHandler,
}


def within_roots(path: Path, roots: Sequence[Path], what: str) -> Path:
    """``path`` resolved, checked to lie in one of ``roots`` (any path when there are none).

    Raises
    ------
    FrameSourceError
        Naming ``what``, the path and the roots.
    """
    resolved = Path(path).resolve()
    if roots and not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        raise FrameSourceError(f"{what}: {resolved} is outside every frame storage root "
                               f"({', '.join(str(r) for r in roots)}); add its directory to "
                               "[frames] storage_roots of the beamline description")
    return resolved


class ResourceFrames:
    """Resolve datum ids to frames through each resource's handler.

    Parameters
    ----------
    roots : sequence of Path
        Storage roots frame files must lie in (none: anywhere).
    spec_aliases : mapping
        Beamline-specific spec -> known spec (see :data:`HANDLERS`).
    root_map : mapping
        Old root -> new root, for files moved since they were recorded.
    """

    def __init__(self, roots: Sequence[Path] = (), spec_aliases: Mapping[str, str] | None = None,
                 root_map: Mapping[str, str] | None = None):
        self.roots = tuple(roots)
        self.spec_aliases = dict(spec_aliases or {})
        self.root_map = dict(root_map or {})
        self._resources: dict[str, dict] = {}
        self._datums: dict[str, dict] = {}

    def resource(self, doc: dict) -> None:
        """Remember a Resource (its spec and file are checked when a datum is read)."""
        self._resources[document_field(doc, "uid", str, "resource")] = doc

    def datum(self, doc: dict) -> None:
        """Remember a Datum."""
        what = f"datum {document_uid(doc)}"
        document_field(doc, "resource", str, what)
        self._datums[document_field(doc, "datum_id", str, "datum")] = doc

    def datum_page(self, doc: dict) -> None:
        """Remember every Datum of a DatumPage."""
        from event_model import unpack_datum_page

        for datum in unpack_datum_page(doc):
            self.datum(datum)

    def knows(self, datum_id: object) -> bool:
        """Whether the datum (and its resource) have arrived."""
        datum = self._datums.get(datum_id) if isinstance(datum_id, str) else None
        return datum is not None and datum["resource"] in self._resources

    def read(self, datum_id: str) -> np.ndarray:
        """The frames of ``datum_id``, shape ``(frames, rows, columns)``, read by its
        resource's handler (:func:`~.reader.read_datum_frames`).

        Raises
        ------
        FrameSourceError
            Unknown datum, resource or spec, or a file outside the storage roots.
        CorruptFrameError
            The handler cannot read the frames (file and datum named).
        """
        datum = self._datums.get(datum_id)
        if datum is None:
            raise FrameSourceError(f"datum {datum_id!r} was never announced")
        resource_uid = datum["resource"]
        resource = self._resources.get(resource_uid)
        if resource is None:
            raise FrameSourceError(f"resource {resource_uid} was never announced")
        what = f"resource {resource_uid}"
        spec = document_field(resource, "spec", str, what)
        handler_class = HANDLERS.get(self.spec_aliases.get(spec, spec))
        if handler_class is None:
            raise FrameSourceError(f"{what} has spec {spec!r}, which no frame handler reads (known: "
                                   f"{', '.join(HANDLERS)}); alias it in [frames.spec_aliases] of the "
                                   "beamline description if it is one of these")
        path = self._path(resource_uid)
        resource_kwargs = document_field(resource, "resource_kwargs", dict, what)
        return read_datum_frames(handler_class, path, resource_kwargs, datum.get("datum_kwargs") or {}, spec=spec,
                                 resource_uid=resource_uid, datum_id=datum_id)

    def _path(self, resource_uid: str) -> Path:
        resource = self._resources[resource_uid]
        what = f"resource {resource_uid}"
        root = resource.get("root") or ""
        if not isinstance(root, str):
            raise MissingMetadataError(f"{what}: 'root' is {root!r}, not text")
        root = self.root_map.get(root, root)
        return within_roots(Path(root) / document_field(resource, "resource_path", str, what), self.roots, what)
