"""What is prepared once per geometry, shared between the processes of a machine.

A process that calls :func:`share_preparations` keeps what it prepares for a geometry
(pixel-splitting matrices, per-pixel normalizations, beamstop shadows, the radial range
the pixels cover) in a :class:`~.preparation_store.PreparationStore` directory, and
takes from there what another process prepared: :func:`obtain` loads a preparation, or computes and saves it
under a claim, or waits while another process computes it. :func:`obtain_together`
divides several preparations between the processes that need them at once: each
computes first what nobody else is computing, then loads the others'. Without a
directory (the default) every preparation is computed in the process that needs it.

:class:`KeptPreparations` adds the memory of one process in front of the store: the
values used most recently, so that a run after the first finds them without reading a
file.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from .preparation_store import DEFAULT_MAX_BYTES, PreparationStore

T = TypeVar("T")
Arrays = dict[str, np.ndarray]

#: Where this process shares its preparations (:func:`share_preparations`; None: nowhere).
_STORE: PreparationStore | None = None
#: Interval (s) at which a preparation another process computes is looked for.
POLL_S = 0.05


def share_preparations(directory: str | Path | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Share what this process prepares per geometry with the other processes using
    ``directory`` (a :class:`~.preparation_store.PreparationStore` bounded to
    ``max_bytes``). The Dask workers replaying runs of the same geometries thus compute
    each preparation once between them. None: stop sharing (the default)."""
    global _STORE
    _STORE = None if directory is None else PreparationStore(directory, max_bytes)


def sharing() -> bool:
    """Whether this process shares its preparations (:func:`share_preparations`)."""
    return _STORE is not None


def obtain(key: tuple, compute: Callable[[], T], encode: Callable[[T], Arrays], decode: Callable[[Arrays], T], *,
           wait: bool = True) -> T | None:
    """The preparation ``key``: loaded from the shared store, else computed here
    (``compute()``) under a claim and saved there, else waited for while another process
    computes it; without a store, computed here.

    Parameters
    ----------
    key : tuple
        Everything the preparation depends on (its ``repr`` names the file).
    compute : callable
        Computes it.
    encode, decode : callable
        The preparation as named arrays, and back (``decode`` raises ValueError for
        arrays that are not one: the file is then computed again).
    wait : bool
        Whether to wait while another process computes it; False returns None then.
    """
    store = _STORE
    if store is None:
        return compute()
    while True:
        value = store.load(key, decode)
        if value is not None:
            return value
        if store.claim(key):
            try:
                value = store.load(key, decode)  # saved by the process whose claim just ended
                if value is None:
                    value = compute()
                    store.save(key, encode(value))
                return value
            finally:
                store.release(key)
        if not wait:
            return None
        time.sleep(POLL_S)


def obtain_together(attempts: Iterable[Callable[[], bool]]) -> None:
    """Call each of ``attempts`` (one preparation each, obtained without waiting: True
    once it is there) until all have succeeded, waiting only when none progressed: what
    no other process is computing is computed first, the others' are loaded after."""
    pending = list(attempts)
    while pending:
        waiting = [attempt for attempt in pending if not attempt()]
        if len(waiting) == len(pending):
            time.sleep(POLL_S)
        pending = waiting


class KeptPreparations(Generic[T]):
    """The ``size`` preparations of one kind used most recently in this process, in
    front of the shared store (:func:`obtain`).

    Parameters
    ----------
    kind : str
        What they are (the first element of every key in the store).
    size : int
        How many are kept in memory.
    encode, decode : callable
        As in :func:`obtain`.
    """

    def __init__(self, kind: str, size: int, encode: Callable[[T], Arrays], decode: Callable[[Arrays], T]):
        self.kind, self.size, self.encode, self.decode = kind, size, encode, decode
        self._values: OrderedDict[tuple, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], T], *, wait: bool = True) -> T | None:
        """The preparation ``key``: kept here, else :func:`obtain`-ed (and kept)."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = obtain((self.kind, *key), compute, self.encode, self.decode, wait=wait)
        if value is not None:
            with self._lock:
                self._values[key] = value
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget what is kept in memory (the shared store keeps its files)."""
        with self._lock:
            self._values.clear()
