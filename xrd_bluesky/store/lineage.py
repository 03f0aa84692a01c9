"""Provenance: walk a derived run back to the raw runs it came from; tell the runs
the live analyses made from replays."""

from __future__ import annotations

from dataclasses import dataclass, field

from tiled.queries import KeyPresent

from ..errors import RunNotFoundError
from .catalog import find_run

#: Start-document keys that name the runs an analysis used.
INPUT_KEYS = ("parent_uids", "calibration_uid", "gain_map_uid")
#: Start-document keys of a replayed derived run: ``replay: True`` and ``replay_of``,
#: the uid of the live derived run it redoes (None if there was none).
REPLAY_KEY, REPLAY_OF_KEY = "replay", "replay_of"


def live_runs(processed):
    """The derived runs in ``processed`` that the live analyses made (not replays).

    Lookups of the current calibration, gain map and reference runs search these, so a
    replay never changes what later live analyses (or replays) use.
    """
    return processed.search(KeyPresent(REPLAY_KEY, exists=False))


@dataclass
class LineageNode:
    """One run in a lineage tree: where it is, what it is, and what it was made from."""

    uid: str
    container: str
    kind: str
    inputs: dict[str, list[LineageNode]] = field(default_factory=dict)

    def raw_uids(self) -> set[str]:
        """Uids of every raw run this run depends on."""
        if self.container == "raw":
            return {self.uid}
        return set().union(*(n.raw_uids() for nodes in self.inputs.values() for n in nodes))

    def lines(self, indent: str = "") -> list[str]:
        """A printable tree."""
        out = [f"{indent}{self.container}/{self.uid}  {self.kind}"]
        for role, nodes in self.inputs.items():
            for node in nodes:
                out += node.lines(indent + f"  {role}: ".ljust(len(indent) + 2))
        return out


def lineage(catalog, uid: str) -> LineageNode:
    """The lineage tree of run ``uid`` (raw or processed; whole or its unique first
    characters) in ``catalog``.

    Follows ``parent_uids``, ``calibration_uid`` and ``gain_map_uid`` of every derived
    run's start document down to raw runs.

    Raises
    ------
    MissingMetadataError
        ``uid``, or a uid a start document names, is not a run uid
        (``UnsafeUidError``) or names no single run.
    RunNotFoundError
        A uid is in neither container.
    """
    return _node(catalog, uid, "run uid")


def _node(catalog, uid: str, what: str) -> LineageNode:
    """The lineage tree of run ``uid``; ``what`` says where the uid came from."""
    for container in ("processed", "raw"):
        run = find_run(getattr(catalog, container), uid, what)
        if run is not None:
            return _described(catalog, run.start, container)
    raise RunNotFoundError(f"run {uid} is in neither the raw nor the processed catalog")


def _described(catalog, start: dict, container: str) -> LineageNode:
    """The lineage tree of the run whose start document is ``start``."""
    kind = start.get("analysis") or start.get("purpose") or start.get("plan_name", "run")
    if start.get(REPLAY_KEY):
        kind += f" (replay of {start.get(REPLAY_OF_KEY) or 'no live run'})"
    node = LineageNode(start["uid"], container, kind)
    if container == "processed":
        for key in INPUT_KEYS:
            value = start.get(key)
            uids = value if isinstance(value, list) else [value] if value else []
            if uids:
                node.inputs[key.removesuffix("_uids").removesuffix("_uid")] = [
                    _node(catalog, u, f"{key} of run {start['uid']}") for u in uids]
    return node
