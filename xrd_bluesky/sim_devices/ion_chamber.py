"""Ion-chamber counters upstream (I0) and downstream (It) of the sample."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device
from ophyd.status import Status

from ..science.reduction.monitors import AIR_TRANSMISSION, FluxCalibration
from .signals import UnitSignal


class IonChamber(Device):
    """A gated ion-chamber counter.

    During each trigger it counts for ``gate_time()`` seconds (the area detector's
    exposure); the upstream chamber's rate follows the linear flux calibration,
    ``rate = (flux - offset) / slope``; the downstream chamber's rate is the upstream
    rate times the air transmission and the sample's transmission. Counts are Poisson.
    """

    counts = Cpt(UnitSignal, value=0.0, units="counts", kind="hinted")

    def __init__(self, *args, flux: Callable[[], float], transmission: Callable[[], float],
                 gate_time: Callable[[], float], calibration: FluxCalibration,
                 rng: np.random.Generator, **kwargs):
        super().__init__(*args, **kwargs)
        self._flux = flux
        self._transmission = transmission
        self._gate_time = gate_time
        self._calibration = calibration
        self._rng = rng

    def trigger(self) -> Status:
        rate = self._calibration.rate(self._flux()) * self._transmission()
        self.counts.put(float(self._rng.poisson(rate * self._gate_time())))
        status = Status(obj=self)
        status.set_finished()
        return status


def upstream_transmission() -> float:
    """I0 sees the unattenuated beam."""
    return 1.0


def downstream_transmission(sample_transmission: Callable[[], float]) -> Callable[[], float]:
    """It sees the beam through the sample and the air between the chambers."""
    return lambda: AIR_TRANSMISSION * sample_transmission()
