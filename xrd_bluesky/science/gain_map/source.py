"""A gain map as analyses use it, with the uid of the run that made it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class GainMapSource:
    """Gain (``corrected = raw / gain``), bad-pixel mask (True = bad) and provenance."""

    gain: np.ndarray
    bad: np.ndarray
    gain_map_uid: str | None = None
