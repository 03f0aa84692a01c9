"""Look up derived runs in the ``processed`` container.

The current calibration, gain map and reference runs are looked up when every run
starts, so their cost must not grow with the catalog. A Tiled search with metadata
conditions does: the server counts its matches (up to its ``exact_count_limit``) with
every page it returns, and with no index on the metadata (SQLite) that count reads the
metadata of every run in the container when matches are rare. Reading the newest runs
of the container without conditions costs the same whatever its size.

:class:`LiveRunIndex` therefore keeps, per process and per ``processed`` container, the
newest successful live run of each analysis (overall and per detector) and of each
parent run, up to the newest run it has read; each lookup reads only the runs added
since (newest first, until it meets one it has read) and re-reads the runs it saw
unfinished. What a process looks up first is searched for once (newest first, with
conditions: the one lookup whose cost grows with the catalog), and from then on
followed in the runs it reads. Order is the catalog's order of insertion, as a listing
of the container gives it, so it answers exactly what listing every matching run would
(a first lookup of a process could miss a run if more than a page of runs were added
between its search and its first read, a few milliseconds).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from tiled.queries import Contains, Key, KeyPresent, KeysFilter

from .catalog import stored_run
from .lineage import REPLAY_KEY

#: Runs per page when reading the newest runs: the first page is small (a run start
#: usually finds a handful of new runs), later ones grow up to the server's limit.
FIRST_PAGE, LAST_PAGE = 16, 256
#: Keys of the newest runs read, kept so that deleting one (``sync`` rewrites a run it
#: back-fills) does not force a full read.
ANCHORS = 8


def latest_successful(processed, analysis: str, **keys):
    """The newest derived run of ``analysis`` (whose start document holds ``keys``, if
    given) in ``processed`` (any container client, searched or not) that ended with
    ``exit_status="success"``, or None.

    One search, newest first, of which only the first run is fetched; the server still
    counts its matches, so for the live lookups at a run's start use
    :func:`current_run` and :func:`current_derived_of`, whose cost does not grow with
    the catalog.
    """
    runs = processed.search(Key("analysis") == analysis).search(Key("stop.exit_status") == "success")
    for key, value in keys.items():
        runs = runs.search(Key(key) == value)
    try:
        return runs.values().last()
    except IndexError:
        return None


def current_run(processed, analysis: str, detector_name: str | None = None):
    """The newest successful derived run of ``analysis`` made live (not a replay) in
    ``processed`` (the catalog's ``processed`` container), of the beamline
    description's detector ``detector_name`` when given, or None."""
    return _index_of(processed).run(processed, ("analysis", analysis, detector_name))


def current_derived_of(processed, analysis: str, parent_uid: str):
    """The newest successful derived run of ``analysis`` made live (not a replay) in
    ``processed`` whose ``parent_uids`` name run ``parent_uid``, or None."""
    return _index_of(processed).run(processed, ("parent", analysis, parent_uid))


def reset_index(processed) -> None:
    """Forget what was read of ``processed``: the next lookup reads it whole, as the
    first one of a process does."""
    with _INDEXES_LOCK:
        _INDEXES.pop(processed.uri, None)


def _index_of(processed) -> LiveRunIndex:
    """The index of the ``processed`` container at ``processed.uri`` (made on first use)."""
    with _INDEXES_LOCK:
        return _INDEXES.setdefault(processed.uri, LiveRunIndex())


_INDEXES: dict[str, LiveRunIndex] = {}
_INDEXES_LOCK = threading.Lock()


@dataclass
class LiveRunIndex:
    """Newest successful live derived runs of one ``processed`` container, read
    incrementally.

    Attributes
    ----------
    newest : dict
        ``("analysis", analysis, detector_name or None)`` and ``("parent", analysis,
        parent_uid)`` -> (order, key) of the newest successful live run so named.
    unfinished : dict
        Key -> {name (None: every name of the run): order} of live runs read or found
        without a stop document (re-read at each lookup until they have one).
    anchors : deque
        Keys of the newest runs read, newest first.
    searched : set
        Names of :attr:`newest` searched for since the index was made: runs before the
        first ones read are known for these only.
    runs_read : int
        Runs read since the index was made (a lookup that read few is incremental).
    """

    newest: dict[tuple, tuple[int, str]] = field(default_factory=dict)
    unfinished: dict[str, dict] = field(default_factory=dict)
    anchors: deque = field(default_factory=lambda: deque(maxlen=ANCHORS))
    searched: set = field(default_factory=set)
    runs_read: int = 0
    _order: int = 0
    _searches: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, processed, name: tuple):
        """The run that ``name`` (a key of :attr:`newest`) names now, or None; the index
        is rebuilt once if that run was deleted."""
        with self._lock:
            for _ in range(2):
                if name not in self.searched:  # before reading: what is added meanwhile is read after it
                    self._search(processed, name)
                self._refresh(processed)
                found = self.newest.get(name)
                run = None if found is None else stored_run(processed, found[1])
                if found is None or run is not None:
                    return run
                self._reset()  # the run was deleted: read everything again
            return None

    def _reset(self) -> None:
        self.newest.clear()
        self.unfinished.clear()
        self.anchors.clear()
        self.searched.clear()

    def _search(self, processed, name: tuple) -> None:
        """Search the live runs that ``name`` names, newest first, down to the newest
        successful one; the unfinished ones above it are followed. Their order, for
        ``name`` only, ranks them below every run read (found again in a later read, a
        run takes its order from there)."""
        kind, analysis, value = name
        runs = processed.search(Key("analysis") == analysis).search(KeyPresent(REPLAY_KEY, exists=False))
        if kind == "parent":
            runs = runs.search(Contains("parent_uids", value))
        elif value is not None:
            runs = runs.search(Key("detector_name") == value)
        self._searches += 1
        base = (self._searches - 2 ** 20) * 2 ** 20  # below every run read, above what earlier searches found
        position, offset, page = 0, 0, FIRST_PAGE
        while True:
            items = runs.items()[-(offset + 1):-(offset + page + 1):-1]
            for key, run in items:
                position += 1
                stop = run.metadata.get("stop")
                if stop is None or stop.get("exit_status") == "success":
                    self._record(key, run.metadata, {name: base - position})
                    if stop is not None:
                        self.searched.add(name)
                        return
            if len(items) < page:
                self.searched.add(name)
                return
            offset, page = offset + page, min(2 * page, LAST_PAGE)

    def _refresh(self, processed) -> None:
        """Read the runs added since the last lookup and the unfinished ones."""
        added = self._added(processed)
        unfinished, self.unfinished = self.unfinished, {}
        if unfinished:  # one search by key: its cost does not grow with the catalog
            for key, run in processed.search(KeysFilter(keys=list(unfinished))).items():
                if key not in added:
                    self._record(key, run.metadata, unfinished[key])
        for key, metadata in reversed(added.items()):  # oldest first: the newest wins
            self._order += 1
            self._record(key, metadata, {None: self._order})
        self.anchors.extendleft(reversed(list(added)[:ANCHORS]))

    def _added(self, processed) -> dict[str, dict]:
        """Key -> metadata of the runs added since the newest one read, newest first
        (the newest page of them at a first lookup; every run if none of the recent
        ones read is still there)."""
        anchors, added, offset, page = set(self.anchors), {}, 0, FIRST_PAGE
        while True:
            items = processed.items()[-(offset + 1):-(offset + page + 1):-1]
            if not anchors:  # a first lookup: what it names is searched for (see _search)
                return {key: run.metadata for key, run in items}
            for key, run in items:
                if key in anchors:
                    return added
                added.setdefault(key, run.metadata)  # runs added meanwhile shift a page: seen twice
            if len(items) < page:
                if anchors:  # none of the runs read is left: start again from what was read now
                    self._reset()
                return added
            offset, page = offset + page, min(2 * page, LAST_PAGE)

    def _record(self, key: str, metadata: dict, orders: dict) -> None:
        """Take in run ``key`` (its ``metadata``) in catalog order ``orders[name]`` for
        the names it has an order for (``orders[None]``: for all)."""
        self.runs_read += 1
        start, stop = metadata.get("start") or {}, metadata.get("stop")
        if REPLAY_KEY in start or not start.get("analysis"):
            return
        if stop is None:
            self.unfinished.setdefault(key, {}).update(orders)
            return
        if stop.get("exit_status") != "success":
            return
        analysis = start["analysis"]
        names = [("analysis", analysis, None)]
        if start.get("detector_name") is not None:
            names.append(("analysis", analysis, start["detector_name"]))
        names += [("parent", analysis, parent) for parent in start.get("parent_uids") or ()]
        for name in names:
            order = max((o for o in (orders.get(name), orders.get(None)) if o is not None), default=None)
            if order is not None and (name not in self.newest or self.newest[name][0] < order):
                self.newest[name] = (order, key)
