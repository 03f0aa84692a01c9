"""The multi-position calibration scan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator, plan

from ..schema.start import CALIBRATION, start_keys
from .counting import Stage, acquire_time_signal, multi_position_count

#: Default stage positions (x, y, distance in mm): spread in x, y and distance.
DEFAULT_CALIBRATION_POSITIONS = ((0.0, 0.0, 300.0), (25.0, -20.0, 300.0), (-20.0, 15.0, 320.0),
                                 (10.0, 25.0, 280.0), (-25.0, -10.0, 340.0))


@plan
def calibration_scan(detector: Readable, stage: Stage, calibrant: str,
                     positions: Sequence[Sequence[float]] = DEFAULT_CALIBRATION_POSITIONS, *,
                     exposure: float | None = 1.0, monitors: Sequence[Any] = (), shutter=None, energy=None,
                     sample: dict | None = None, beamline: Any = None, md: dict | None = None) -> MsgGenerator[str]:
    """Acquire a calibrant frame at each detector-stage position.

    Parameters
    ----------
    detector : area detector
        Any readable area detector.
    stage : device, mapping or None
        Detector stage (see :func:`~xrd_bluesky.plans.multi_position_count`); None for
        a fixed detector (then ``positions=[()]``).
    calibrant : str
        pyFAI calibrant name, recorded as ``calibrant`` in the start document.
    positions : sequence of (x, y, distance)
        Stage positions (mm); default five spread in x, y and distance.
    exposure : float or None
        Exposure time per frame (s), set on the detector's ``acquire_time`` signal
        (``cam.acquire_time`` for ophyd v1, ``driver.acquire_time`` for ophyd-async);
        None: leave the detector as it is.
    monitors : devices
        Extra readables (ion chambers).
    shutter, energy, sample, beamline, md
        As in :func:`~xrd_bluesky.plans.multi_position_count`.
    """
    if exposure is not None:
        yield from bps.mv(acquire_time_signal(detector), exposure)
    return (yield from multi_position_count(
        [detector, *monitors], stage, positions, shutter=shutter, energy=energy, beamline=beamline,
        sample=sample or {"name": calibrant}, purpose=CALIBRATION,
        md={**start_keys(calibrant=calibrant, plan_name="calibration_scan", exposure_s=exposure), **(md or {})}))
