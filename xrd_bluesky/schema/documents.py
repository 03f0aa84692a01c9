"""Reading keys of Bluesky documents with errors that name the document and the key;
checking run uids before they become file names, Tiled keys or URL segments."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import MissingMetadataError

#: Python types a document field may be checked against, with the name messages use.
FIELD_KINDS = {str: "text", int: "an integer", dict: "a mapping", list: "a list"}
#: Most characters of a run uid (a uuid4 has 36).
MAX_UID_LENGTH = 128
#: A run uid: URL-unreserved characters (letters, digits, ``-``, ``_``, ``.``), the first a letter or digit.
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class UnsafeUidError(MissingMetadataError):
    """A run uid, from a document or a user's argument, that cannot be used as a file
    name, a Tiled key and a URL segment (empty, too long, a path, other characters):
    the value and where it came from are named."""


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


def check_uid(value: object, what: str) -> str:
    """``value``, checked to be a run uid that is safe as one path component, one Tiled
    key and one URL segment.

    Parameters
    ----------
    value : object
        The uid, from a document or a user's argument.
    what : str
        Where it came from (e.g. ``"start document of raw/x.jsonl"``, ``"--calibration"``),
        for the message.

    Returns
    -------
    str
        ``value``.

    Raises
    ------
    UnsafeUidError
        ``value`` is not text, is empty, is longer than :data:`MAX_UID_LENGTH`, holds
        ``..`` or a character other than letters, digits, ``-``, ``_`` and ``.``, or
        does not begin with a letter or a digit (so no ``/``, ``\\``, NUL, absolute
        path or ``..``): the message names ``what`` and the value.
    """
    if not isinstance(value, str):
        raise UnsafeUidError(f"{what} is {value!r} ({type(value).__name__}), not a run uid (text)")
    if len(value) > MAX_UID_LENGTH:
        raise UnsafeUidError(f"{what} {value[:40]!r}... has {len(value)} characters: a run uid has at most "
                             f"{MAX_UID_LENGTH}")
    if not _UID.fullmatch(value) or ".." in value:
        raise UnsafeUidError(f"{what} {value!r} is not a run uid: it must be non-empty, begin with a letter or a "
                             "digit and hold only letters, digits, '-', '_' and '.' (never '..')")
    return value
