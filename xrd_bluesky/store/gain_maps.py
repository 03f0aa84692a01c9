"""Find gain maps in the catalog: the latest good one, or one named by uid."""

from __future__ import annotations

import numpy as np
from tiled.queries import Key

from ..errors import XRDBlueskyError
from ..science.gain_map_source import GainMapSource


def latest_gain_map_uid(processed) -> str | None:
    """Uid of the newest successful gain-map run in ``processed``, or None."""
    runs = processed.search(Key("analysis") == "gain_map")
    for uid in reversed(list(runs)):
        if (runs[uid].stop or {}).get("exit_status") == "success":
            return uid
    return None


def gain_map_from_run(run) -> GainMapSource:
    """The gain map and bad-pixel mask stored in a derived gain-map run."""
    uid = run.start["uid"]
    if run.start.get("analysis") != "gain_map" or (run.stop or {}).get("exit_status") != "success":
        raise XRDBlueskyError(f"run {uid} is not a successful gain map")
    stream = run["gain_map"]
    gain = np.asarray(stream["gain"].read())[0]
    bad = np.asarray(stream["bad"].read())[0].astype(bool)
    return GainMapSource(gain, bad, uid)
