"""Ion-chamber monitors: the counts-to-flux calibration and transmission."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import MonitorError, XRDBlueskyError

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
        """Photon flux (ph/s) from I0 counts accumulated over ``exposure_s`` (s).

        Raises
        ------
        MonitorError
            ``i0_counts`` or ``exposure_s`` is not a positive finite number, or the
            calibration gives a flux that is not positive and finite.
        """
        i0_counts = positive("monitor I0", i0_counts, "counts")
        exposure_s = positive("exposure", exposure_s, "s")
        flux = self.slope * i0_counts / exposure_s + self.offset
        if not (math.isfinite(flux) and flux > 0):
            raise MonitorError(f"I0={i0_counts!r} counts in {exposure_s!r} s gives a flux of {flux:.3g} ph/s "
                               f"(calibration slope {self.slope!r}, offset {self.offset!r}): not > 0")
        return flux

    def rate(self, flux_ph_s: float) -> float:
        """I0 count rate (counts/s) that a flux (ph/s) produces."""
        return (flux_ph_s - self.offset) / self.slope


def transmission(i0_counts: float, it_counts: float, air_transmission: float = AIR_TRANSMISSION) -> float:
    """Sample transmission ``(It / I0) / air_transmission`` from matched chambers' counts.

    Raises
    ------
    MonitorError
        ``I0`` is not a positive finite count, ``It`` not a finite count >= 0,
        ``air_transmission`` not in (0, 1], or the transmission exceeds 1.05.
    """
    i0_counts = positive("monitor I0", i0_counts, "counts")
    it_counts = positive("monitor It", it_counts, "counts", allow_zero=True)
    air_transmission = air_fraction(air_transmission)
    t = it_counts / i0_counts / air_transmission
    if t > 1.05:
        raise MonitorError(f"transmission It/I0/air = {t:.4g} > 1: check It={it_counts!r}, I0={i0_counts!r}")
    return t


def positive(name: str, value: object, unit: str, *, allow_zero: bool = False,
             error: type[XRDBlueskyError] = MonitorError) -> float:
    """``value`` as a float when it is a finite number > 0 (>= 0 with ``allow_zero``).

    Parameters
    ----------
    name : str
        What the value is (``"monitor I0"``, ``"exposure"``...), for the message.
    value : object
        The value to check: a number, or anything ``float`` converts (not text).
    unit : str
        Its unit (``"counts"``, ``"s"``, ``"mm"``...), for the message.
    allow_zero : bool
        Accept 0.
    error : type
        The domain error to raise.

    Raises
    ------
    XRDBlueskyError
        ``error``, naming ``name`` and the value: not a number, not finite, negative,
        or zero without ``allow_zero``.
    """
    try:
        number = None if isinstance(value, (str, bytes)) else float(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None:
        raise error(f"{name}={value!r} {unit} is not a number")
    if not (math.isfinite(number) and (number > 0 or (allow_zero and number == 0))):
        raise error(f"{name}={number!r} {unit} is not a finite number {'>= 0' if allow_zero else '> 0'}")
    return number


def air_fraction(value: object) -> float:
    """The air transmission between the chambers as a float in (0, 1], or
    :class:`MonitorError` naming the value."""
    fraction = positive("air transmission", value, "")
    if fraction > 1:
        raise MonitorError(f"air transmission={fraction!r} is above 1")
    return fraction
