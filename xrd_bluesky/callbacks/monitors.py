"""A measurement run's I0 and It monitors, and each frame's exposure from them.

The exposure (flux from I0, transmission from It / I0, counting time, sample thickness)
puts a frame on the absolute scale; a frame whose monitors are absent or unusable is
integrated all the same, with the reason it has no absolute scale.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import MissingMetadataError, MonitorError
from ..schema import InstrumentSettings
from ..science.reduction.absolute_scale import Exposure


class Monitors:
    """The monitors a run names and the sample's thickness: each frame's :class:`Exposure`.

    Parameters
    ----------
    keys : mapping
        Data keys of the run's monitors by role (``i0``, ``it``).
    thickness_mm : float or None
        Sample thickness (mm).
    instrument : InstrumentSettings
        The flux calibration of I0 and the air transmission between the chambers.
    """

    def __init__(self, keys: Mapping[str, str], thickness_mm: float | None, instrument: InstrumentSettings):
        self.keys = keys
        self.thickness_mm = thickness_mm
        self.instrument = instrument

    def readings(self, event: dict) -> dict[str, float]:
        """The raw ``event``'s ``i0`` and ``it`` (counts; NaN when unusable)."""
        return {"i0": _monitor_value(event, self.keys.get("i0")), "it": _monitor_value(event, self.keys.get("it"))}

    def exposure(self, event: dict, acquire_time: float | None, n_frames: int) -> tuple[Exposure | None, str]:
        """The exposure of the raw ``event``'s ``n_frames`` frames of ``acquire_time`` (s)
        each, or None and the reason it is unusable ("" when usable)."""
        if self.instrument.flux_calibration is None:
            return None, "the beamline description gives no flux calibration of I0"
        if not {"i0", "it"} <= set(self.keys):
            return None, f"the run names no I0 and It monitors (monitors: {self.keys})"
        try:
            exposure = Exposure(_monitor_value(event, self.keys["i0"]), _monitor_value(event, self.keys["it"]),
                                None if acquire_time is None else float(acquire_time) * n_frames,
                                self.thickness_mm, self.instrument.flux_calibration,
                                self.instrument.air_transmission)
            exposure.check()
        except (MonitorError, MissingMetadataError) as exc:
            return None, str(exc)
        return exposure, ""


def _monitor_value(event: dict, key: str | None) -> float:
    """Monitor ``key`` of the raw ``event``; NaN when the run names none, or it is absent
    or not a number (the absolute scale then flags the event naming the monitor)."""
    if key is None:
        return np.nan
    try:
        return float(event["data"][key])
    except (KeyError, TypeError, ValueError):
        return np.nan
