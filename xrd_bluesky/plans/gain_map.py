"""The multi-position gain-map scan of an amorphous scatterer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps

from ..science.gain_map import check_shadows_disjoint
from ..science.geometry import DetectorPositionModel, StagePosition
from ..science.image_formation import Beamstop
from .counting import multi_position_count


def gain_map_scan(detector, stage, positions: Sequence[Sequence[float]], *, frames_per_position: int = 10,
                  exposure: float = 1.0, darks: bool = True, shutter=None, geometry: DetectorPositionModel,
                  beamstop: Beamstop, monitors: Sequence[Any] = (), energy=None, sample: dict | None = None,
                  md: dict | None = None):
    """Frames of an amorphous scatterer at several detector-stage positions.

    Before anything moves, the beamstop shadows predicted by ``geometry`` at the
    positions are checked not to overlap (every pixel must be seen unshadowed
    somewhere); overlapping positions are refused, named.

    Parameters
    ----------
    detector : area detector
        With an ``acquire_time`` signal (s).
    stage : device
        Detector stage with ``x``, ``y``, ``distance`` motors (mm).
    positions : sequence of (x, y, distance)
        Stage positions (mm), 3 to 5 typically.
    frames_per_position : int
        Frames averaged at each position.
    exposure : float
        Exposure time per frame (s).
    darks : bool
        Take ``frames_per_position`` dark frames first (needs ``shutter``).
    shutter : settable
        The fast shutter.
    geometry : DetectorPositionModel
        Current calibration, for the shadow check.
    beamstop : Beamstop
        The beamline's beamstop.
    monitors, energy, sample, md
        As in :func:`~xrd_bluesky.plans.multi_position_count`.
    """
    if darks and shutter is None:
        raise ValueError("gain_map_scan(darks=True) needs the shutter to take dark frames")
    positions = [tuple(float(v) for v in p) for p in positions]
    check_shadows_disjoint([geometry.poni_at(StagePosition(*p)) for p in positions], beamstop,
                           [f"position {i} {p}" for i, p in enumerate(positions)])
    yield from bps.mv(detector.acquire_time, exposure)
    return (yield from multi_position_count(
        [detector, *monitors], stage, positions, num=frames_per_position,
        shutter=shutter if darks else None, num_darks=frames_per_position, energy=energy,
        sample=sample or {"name": "glass"}, purpose="gain_map",
        md={"plan_name": "gain_map_scan", "exposure_s": exposure, "frames_per_position": frames_per_position,
            **(md or {})}))
