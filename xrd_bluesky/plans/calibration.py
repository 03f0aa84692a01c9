"""The multi-position calibration scan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps

from .counting import multi_position_count

#: Default stage positions (x, y, distance in mm): spread in x, y and distance.
DEFAULT_CALIBRATION_POSITIONS = ((0.0, 0.0, 300.0), (25.0, -20.0, 300.0), (-20.0, 15.0, 320.0),
                                 (10.0, 25.0, 280.0), (-25.0, -10.0, 340.0))


def calibration_scan(detector, stage, calibrant: str,
                     positions: Sequence[Sequence[float]] = DEFAULT_CALIBRATION_POSITIONS, *,
                     exposure: float = 1.0, monitors: Sequence[Any] = (), shutter=None, energy=None,
                     sample: dict | None = None, md: dict | None = None):
    """Acquire a calibrant frame at each detector-stage position.

    Parameters
    ----------
    detector : area detector
        With an ``acquire_time`` signal (s).
    stage : device
        Detector stage with ``x``, ``y``, ``distance`` motors (mm).
    calibrant : str
        pyFAI calibrant name, recorded as ``calibrant`` in the start document.
    positions : sequence of (x, y, distance)
        Stage positions (mm); default five spread in x, y and distance.
    exposure : float
        Exposure time per frame (s).
    monitors : devices
        Extra readables (ion chambers).
    shutter, energy, sample, md
        As in :func:`~xrd_bluesky.plans.multi_position_count`.
    """
    yield from bps.mv(detector.acquire_time, exposure)
    return (yield from multi_position_count(
        [detector, *monitors], stage, positions, shutter=shutter, energy=energy,
        sample=sample or {"name": calibrant}, purpose="calibration",
        md={"calibrant": calibrant, "plan_name": "calibration_scan", "exposure_s": exposure, **(md or {})}))
