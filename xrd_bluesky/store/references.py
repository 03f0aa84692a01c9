"""Look up a raw run's stored absolute pattern: the background or standard of another run."""

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
