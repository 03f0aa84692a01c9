"""Bluesky documents over bluesky's 0MQ proxy (``bluesky-0MQ-proxy``), msgpack-encoded.

A RunEngine publishes every document with :class:`DocumentPublisher` (bluesky's
``Publisher`` with :func:`pack_document`) to the proxy's input port; a process on any
host receives them from the proxy's output port with :class:`DocumentReceiver`
(bluesky's ``RemoteDispatcher`` with :func:`decode_message`). See
:mod:`xrd_bluesky.worker`.

Documents are msgpack, never pickle: a received message is data, never code. NumPy
arrays and scalars travel as msgpack extensions holding their dtype (``dtype.str``),
shape and raw bytes, so a document reads back bit for bit, with the same dtypes and
NumPy scalar types; object and structured dtypes are refused on both sides. Tuples
become lists and mappings dicts, as in JSON. A message that is not such a document
(a pickle from bluesky's default serializer, truncated bytes, an unknown document
type) is logged with the reason and skipped by the receiver.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import Callable, Mapping

import msgpack
import numpy as np
from bluesky.callbacks.zmq import Publisher
from bluesky.run_engine import DocumentNames

from .compat.bluesky import MessageDispatcher
from .errors import XRDBlueskyError
from .isolation import isolated

logger = logging.getLogger(__name__)

#: msgpack extension codes: a NumPy array, a NumPy scalar.
_ARRAY, _SCALAR = 1, 2
#: The first two bytes of a pickle of protocol 2 to 5 (never a valid msgpack document:
#: 0x80 is an empty map, which would be the whole message).
_PICKLE_HEADERS = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))


class ZmqLinkError(XRDBlueskyError, ValueError):
    """A 0MQ address, a document to publish or a received message is malformed."""


def zmq_endpoint(address: str) -> str:
    """The 0MQ endpoint of ``HOST:PORT`` (``tcp://HOST:PORT``); a full endpoint
    (``tcp://...``, ``ipc://...``) is kept as it is.

    Raises
    ------
    ZmqLinkError
        ``address`` is neither ``HOST:PORT`` (port 1-65535) nor an endpoint.
    """
    if "://" in address:
        return address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ZmqLinkError(f"0MQ address {address!r} is not HOST:PORT (e.g. localhost:5577)")
    return f"tcp://{address}"


# -- documents <-> bytes ---------------------------------------------------------------
def _numpy_dtype(dtype: np.dtype, where: str) -> str:
    """``dtype.str``, after refusing what it cannot carry faithfully (or safely)."""
    if dtype.hasobject:
        raise ZmqLinkError(f"{where} has dtype {dtype}: Python objects are never sent (they would need pickle)")
    if dtype.names is not None or dtype.subdtype is not None:
        raise ZmqLinkError(f"{where} has structured dtype {dtype}, which documents do not carry")
    return dtype.str


def _encode(value):
    """msgpack's ``default``: NumPy arrays and scalars as extensions; tuples as lists,
    mappings as dicts; other subclasses of list, int, float, str and bytes as their base."""
    if isinstance(value, np.ndarray):  # tobytes(): C order, whatever the array's layout
        spec = [_numpy_dtype(value.dtype, "an array"), list(value.shape), value.tobytes()]
        return msgpack.ExtType(_ARRAY, msgpack.packb(spec, use_bin_type=True))
    if isinstance(value, np.generic):
        spec = [_numpy_dtype(value.dtype, "a scalar"), [], value.tobytes()]
        return msgpack.ExtType(_SCALAR, msgpack.packb(spec, use_bin_type=True))
    if isinstance(value, (tuple, list)):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    for base in (int, float, bytes):  # e.g. an IntEnum in metadata
        if isinstance(value, base):
            return base(value)
    if isinstance(value, str):
        return str.__str__(value)
    raise ZmqLinkError(f"a document holds a {type(value).__module__}.{type(value).__name__}, which cannot be sent")


def pack_document(doc: dict) -> bytes:
    """msgpack bytes of one document (see the module docstring).

    Raises
    ------
    ZmqLinkError
        The document holds an object or structured array, or a value msgpack cannot
        carry (named).
    """
    # strict types: NumPy's float64 and str_ (subclasses of float and str) keep their type
    try:
        return msgpack.packb(doc, default=_encode, use_bin_type=True, strict_types=True)
    except ZmqLinkError:
        raise
    except (TypeError, OverflowError, ValueError) as exc:  # e.g. an int beyond 64 bits
        raise ZmqLinkError(f"document cannot be encoded: {type(exc).__name__}: {exc}") from exc


def _decode_extension(code: int, data: bytes):
    """msgpack's ``ext_hook``: a NumPy array or scalar, checked before it is built."""
    if code not in (_ARRAY, _SCALAR):
        raise ZmqLinkError(f"unknown msgpack extension type {code}")
    try:
        dtype_str, shape, raw = msgpack.unpackb(data, raw=False)
        dtype = np.dtype(dtype_str) if isinstance(dtype_str, str) else None
    except Exception as exc:  # whatever the bytes are, they are not our extension
        raise ZmqLinkError(f"malformed NumPy extension: {type(exc).__name__}: {exc}") from exc
    if dtype is None or not isinstance(raw, bytes) or not isinstance(shape, list) \
            or not all(isinstance(n, int) and n >= 0 for n in shape) or (code == _SCALAR and shape):
        raise ZmqLinkError(f"malformed NumPy extension (dtype {dtype_str!r}, shape {shape!r})")
    _numpy_dtype(dtype, f"a received {'array' if code == _ARRAY else 'scalar'}")
    if dtype.itemsize == 0 or len(raw) != dtype.itemsize * math.prod(shape):
        raise ZmqLinkError(f"NumPy extension of dtype {dtype.str} and shape {shape} holds {len(raw)} bytes")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return array if code == _ARRAY else array[()]


def unpack_document(payload: bytes) -> dict:
    """The document of msgpack bytes made by :func:`pack_document`.

    Raises
    ------
    ZmqLinkError
        ``payload`` is a pickle (never loaded), not msgpack, not a map, or holds a
        malformed or refused NumPy extension; the message says which.
    """
    if payload[:2] in _PICKLE_HEADERS:
        raise ZmqLinkError("the document is a pickle, which is never loaded: publish with msgpack "
                           "(xrd_bluesky.zmq_link.pack_document, as `xrd-bluesky session --publish` does)")
    try:
        doc = msgpack.unpackb(payload, ext_hook=_decode_extension, raw=False, strict_map_key=True)
    except ZmqLinkError:
        raise
    except Exception as exc:  # msgpack raises several types on bad bytes
        raise ZmqLinkError(f"the document ({len(payload)} bytes) cannot be read as msgpack: "
                           f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ZmqLinkError(f"the document is a msgpack {type(doc).__name__}, not a map")
    return doc


def decode_message(message: bytes) -> tuple[str, dict]:
    """``(name, doc)`` of one message as bluesky's ``Publisher`` frames it:
    ``PREFIX b" " NAME b" " PAYLOAD`` (the prefix is ignored).

    Raises
    ------
    ZmqLinkError
        The message is not so framed, names no document type, or its payload is not
        a document (see :func:`unpack_document`).
    """
    parts = message.split(b" ", 2)
    if len(parts) != 3:
        raise ZmqLinkError(f"not a bluesky document message ({len(message)} bytes, starting {message[:20]!r})")
    name = parts[1].decode("utf-8", "replace")
    if name not in DocumentNames.__members__:
        raise ZmqLinkError(f"unknown document type {name[:40]!r}")
    return name, unpack_document(parts[2])


# -- the two ends ----------------------------------------------------------------------
class DocumentPublisher:
    """Publish every document to a bluesky 0MQ proxy: bluesky's ``Publisher`` with
    :func:`pack_document`; subscribe it to a RunEngine.

    An optional consumer: a document that cannot be encoded or sent is logged and
    skipped, never raised into the RunEngine (the raw writer, subscribed before it,
    has recorded the document). A receiver then sees that run incomplete.

    Parameters
    ----------
    address : str
        The proxy's input port, ``HOST:PORT`` or a 0MQ endpoint.
    """

    def __init__(self, address: str):
        self._publisher = Publisher(zmq_endpoint(address), serializer=pack_document)
        self.address = self._publisher.address

    def _not_published(self, name: str, doc: dict, *, exc: Exception) -> None:
        """The reaction to a document that cannot be encoded or sent (see
        :func:`~xrd_bluesky.isolation.isolated`): logged with its traceback, skipped."""
        logger.exception("%s document %s not published to %s", name, doc.get("uid"), self.address)

    @isolated(_not_published)
    def __call__(self, name: str, doc: dict) -> None:
        self._publisher(name, doc)

    def close(self) -> None:
        """Close the socket (documents not yet sent are dropped)."""
        self._publisher.close()


class DocumentReceiver(MessageDispatcher):
    """Receive documents from a bluesky 0MQ proxy and dispatch them to subscribers
    (``receiver.subscribe(callback)``), until SIGINT or SIGTERM (in the main thread)
    or :meth:`stop_soon`; :meth:`start` then returns.

    bluesky's ``RemoteDispatcher`` with its receive loop replaced
    (:class:`~xrd_bluesky.compat.bluesky.MessageDispatcher`): every message is decoded
    by :func:`decode_message`, and one that is not a document is logged (with the
    reason) and skipped, whatever its bytes; bluesky's loop prints such messages, and a
    message naming an unknown document type ends it.

    Parameters
    ----------
    address : str
        The proxy's output port, ``HOST:PORT`` or a 0MQ endpoint.
    on_listening : callable, optional
        Called once the receiver listens: its socket connecting (0MQ connects in the
        background) and the signal handlers installed. Messages the proxy forwards
        before the connection is made are not received (0MQ's "slow joiner").
    """

    def __init__(self, address: str, *, on_listening: Callable[[], None] = lambda: None):
        super().__init__(zmq_endpoint(address), deserializer=unpack_document)
        self.on_listening = on_listening
        self.skipped = 0

    def listening(self) -> None:
        """Stop on SIGINT and SIGTERM (in the main thread), then call ``on_listening``."""
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.loop.add_signal_handler(signum, self.stop_soon)
        self.on_listening()

    def receive(self, message: bytes) -> None:
        """Dispatch the document of ``message``, or log and skip it if it is none."""
        try:
            name, doc = decode_message(message)
        except ZmqLinkError as exc:
            self.skipped += 1
            logger.warning("skipped a message from %s: %s", self.address, exc)
            return
        self.loop.call_soon(self.process, DocumentNames[name], doc)
