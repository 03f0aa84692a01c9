"""Ion-chamber monitors: the counts-to-flux calibration and transmission."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import MonitorError

#: Air transmission between the upstream (I0) and downstream (It) chambers, APS 8-ID.
AIR_TRANSMISSION = 0.868


@dataclass(frozen=True)
class FluxCalibration:
    """Linear calibration ``flux (ph/s) = slope * I0_rate (counts/s) + offset``.

    The default is APS 8-ID's: flux = 6.25e4 * I0_rate - 1.28e7 ph/s.
    """

    slope: float = 6.25e4
    offset: float = -1.28e7

    def flux(self, i0_counts: float, exposure_s: float) -> float:
        """Photon flux (ph/s) from I0 counts accumulated over ``exposure_s`` (s)."""
        _check_monitor("I0", i0_counts)
        if not (exposure_s > 0 and math.isfinite(exposure_s)):
            raise MonitorError(f"exposure must be > 0 s, got {exposure_s!r}")
        flux = self.slope * i0_counts / exposure_s + self.offset
        if flux <= 0:
            raise MonitorError(f"I0={i0_counts!r} counts in {exposure_s} s gives a flux <= 0 ({flux:.3g} ph/s)")
        return flux

    def rate(self, flux_ph_s: float) -> float:
        """I0 count rate (counts/s) that a flux (ph/s) produces."""
        return (flux_ph_s - self.offset) / self.slope


def transmission(i0_counts: float, it_counts: float, air_transmission: float = AIR_TRANSMISSION) -> float:
    """Sample transmission ``(It / I0) / air_transmission`` from matched chambers' counts."""
    _check_monitor("I0", i0_counts)
    _check_monitor("It", it_counts, allow_zero=True)
    t = it_counts / i0_counts / air_transmission
    if t > 1.05:
        raise MonitorError(f"transmission It/I0/air = {t:.4g} > 1: check It={it_counts!r}, I0={i0_counts!r}")
    return t


def _check_monitor(name: str, value: float, allow_zero: bool = False) -> None:
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise MonitorError(f"monitor {name}={value!r} is not a positive finite count")
