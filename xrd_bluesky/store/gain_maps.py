"""Find gain maps in the catalog: the latest good one, or one named by uid."""

from __future__ import annotations

import numpy as np

from ..errors import XRDBlueskyError
from ..schema.gain_map import ANALYSIS, GAIN_MAP_STREAM
from ..science.gain_map.source import GainMapSource
from .derived_runs import current_run


def latest_gain_map_uid(processed, detector_name: str | None = None) -> str | None:
    """Uid of the newest successful gain-map run made live in ``processed`` (replays
    never become current), of the beamline description's detector ``detector_name``
    when given, or None."""
    run = current_run(processed, ANALYSIS, detector_name)
    return None if run is None else run.start["uid"]


def gain_map_from_run(run) -> GainMapSource:
    """The gain map and bad-pixel mask stored in a derived gain-map run."""
    uid = run.start["uid"]
    if run.start.get("analysis") != ANALYSIS or (run.stop or {}).get("exit_status") != "success":
        raise XRDBlueskyError(f"run {uid} is not a successful gain map")
    stream = run[GAIN_MAP_STREAM]
    gain = np.asarray(stream["gain"].read())[0]
    bad = np.asarray(stream["bad"].read())[0].astype(bool)
    return GainMapSource(gain, bad, uid)
