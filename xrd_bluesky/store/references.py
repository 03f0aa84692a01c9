"""Look up what another run provides: a background's or standard's stored absolute
pattern, a dark run's mean frame."""

from __future__ import annotations

import numpy as np
from tiled.queries import Contains

from ..errors import MissingMetadataError
from ..science.absolute_scale import ReferencePattern
from ..science.integration import IntegrationResult
from .derived_runs import latest_successful


def reference_pattern(processed, raw_uid: str) -> ReferencePattern:
    """The final stitched pattern on the monitors' absolute scale (q in 1/nm, 1/cm/sr;
    any standard factor it was multiplied by taken out) of the newest successful
    integration of raw run ``raw_uid``, with its thickness and, for a standard run,
    its own standard factor."""
    run = latest_successful(processed.search(Contains("parent_uids", raw_uid)), "integration")
    if run is None:
        raise MissingMetadataError(f"run {raw_uid} has no successful integration in the catalog")
    if "stitched_absolute" not in run:
        raise MissingMetadataError(f"integration {run.start['uid']} of run {raw_uid} has no absolute-scale "
                                   "pattern (monitors or thickness were unusable)")
    data = run["stitched_absolute"].read()
    last = -1
    applied = float(np.asarray(data["standard_factor"])[last])  # back to the monitors' scale
    pattern = IntegrationResult(np.asarray(data["q"][last]), np.asarray(data["intensity"][last]) / applied,
                                np.asarray(data["sigma"][last]) / applied, "q_nm^-1")
    factor = float(np.asarray(run["standard"].read()["standard_factor"])[-1]) if "standard" in run else None
    return ReferencePattern(raw_uid, pattern, float(np.asarray(data["thickness_mm"])[last]), factor)


def dark_frame(raw, uid: str) -> tuple[np.ndarray, float | None]:
    """Mean frame (counts per frame) of dark run ``uid`` in ``raw`` and its frame
    exposure (s; None if not recorded)."""
    run = raw[uid]
    if run.start.get("purpose") != "dark":
        raise MissingMetadataError(f"run {uid} is not a dark run (purpose {run.start.get('purpose')!r})")
    descriptor = run["primary"].metadata  # the stream's descriptor
    key = next((k for k, v in descriptor["data_keys"].items() if v.get("external") == "STREAM:"), None)
    if key is None:
        raise MissingMetadataError(f"dark run {uid} has no detector frames")
    frames = np.asarray(run["primary"][key].read(), dtype=np.float64)
    exposure = next((v for c in descriptor.get("configuration", {}).values()
                     for k, v in c.get("data", {}).items() if k.endswith("_acquire_time")), None)
    return frames.reshape(-1, *frames.shape[-2:]).mean(axis=0), exposure
