"""Reading keys of Bluesky documents with errors that name the document and the key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import MissingMetadataError

#: Python types a document field may be checked against, with the name messages use.
FIELD_KINDS = {str: "text", int: "an integer", dict: "a mapping", list: "a list"}


def document_field(doc: Mapping, key: str, kind: type, what: str) -> Any:
    """``doc[key]``, checked to be of ``kind`` (``str``, ``int``, ``dict`` or ``list``;
    any mapping passes as ``dict``, a tuple as ``list``, and a bool is not an int).

    Parameters
    ----------
    doc : Mapping
        A document (or part of one).
    key : str
        The key to read.
    kind : type
        One of :data:`FIELD_KINDS`.
    what : str
        What ``doc`` is (e.g. ``"event 1f3c..."``), for the message.

    Raises
    ------
    MissingMetadataError
        Naming ``what`` and ``key`` when ``doc`` is not a mapping, lacks ``key`` or
        holds a value of another kind there (the value is named).
    """
    if not isinstance(doc, Mapping) or key not in doc:
        raise MissingMetadataError(f"{what} has no {key!r} key")
    value = doc[key]
    accepted = {dict: Mapping, list: (list, tuple), int: (int, np.integer)}.get(kind, kind)
    if not isinstance(value, accepted) or (kind is int and isinstance(value, bool)):
        raise MissingMetadataError(f"{what}: {key!r} is {value!r}, not {FIELD_KINDS[kind]}")
    return value


def document_uid(doc: Mapping) -> str:
    """The document's ``uid`` for messages (``"?"`` when it has none)."""
    return str(doc.get("uid", "?")) if isinstance(doc, Mapping) else "?"
