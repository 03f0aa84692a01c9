"""The multi-position gain-map scan of an amorphous scatterer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator, plan

from ..schema.start import GAIN_MAP, start_keys
from ..science.detector_pixels import Beamstop
from ..science.gain_map.method import check_shadows_disjoint
from ..science.geometry import DetectorPositionModel, StagePosition
from .counting import Stage, acquire_time_signal, multi_position_count


@plan
def gain_map_scan(detector: Readable, stage: Stage, positions: Sequence[Sequence[float]], *,
                  frames_per_position: int = 10, exposure: float | None = 1.0, darks: bool = True, shutter=None,
                  geometry: DetectorPositionModel, beamstop: Beamstop | None, monitors: Sequence[Any] = (),
                  energy=None, sample: dict | None = None, beamline: Any = None,
                  md: dict | None = None) -> MsgGenerator[str]:
    """Frames of an amorphous scatterer at several detector-stage positions.

    Before anything moves, the beamstop shadows predicted by ``geometry`` at the
    positions are checked not to overlap (every pixel must be seen unshadowed
    somewhere); overlapping positions are refused, named.

    Parameters
    ----------
    detector : area detector
        Any readable area detector.
    stage : device or mapping
        Detector stage (see :func:`~xrd_bluesky.plans.multi_position_count`).
    positions : sequence of (x, y, distance)
        Stage positions (mm), 3 to 5 typically.
    frames_per_position : int
        Frames averaged at each position.
    exposure : float or None
        Exposure time per frame (s), set as in :func:`~xrd_bluesky.plans.calibration_scan`
        (None: leave the detector as it is).
    darks : bool
        Take ``frames_per_position`` dark frames first (needs ``shutter``).
    shutter : settable
        The fast shutter.
    geometry : DetectorPositionModel
        Current calibration, for the shadow check.
    beamstop : Beamstop or None
        The beamline's beamstop (None: there is none).
    monitors, energy, sample, beamline, md
        As in :func:`~xrd_bluesky.plans.multi_position_count`.
    """
    if darks and shutter is None:
        raise ValueError("gain_map_scan(darks=True) needs the shutter to take dark frames")
    positions = [tuple(float(v) for v in p) for p in positions]
    if beamstop is not None:
        check_shadows_disjoint([geometry.poni_at(StagePosition(*p)) for p in positions], beamstop,
                               [f"position {i} {p}" for i, p in enumerate(positions)])
    if exposure is not None:
        yield from bps.mv(acquire_time_signal(detector), exposure)
    return (yield from multi_position_count(
        [detector, *monitors], stage, positions, num=frames_per_position,
        shutter=shutter if darks else None, num_darks=frames_per_position, energy=energy, beamline=beamline,
        sample=sample or {"name": "glass"}, purpose=GAIN_MAP,
        md={**start_keys(plan_name="gain_map_scan", exposure_s=exposure, frames_per_position=frames_per_position),
            **(md or {})}))
