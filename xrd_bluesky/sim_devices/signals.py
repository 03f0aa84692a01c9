"""Small ophyd building blocks shared by the simulated devices."""

from __future__ import annotations

from ophyd import Signal


class UnitSignal(Signal):
    """A soft signal whose description carries its physical ``units``."""

    def __init__(self, *args, units: str = "", **kwargs):
        self._units = units
        super().__init__(*args, **kwargs)

    def describe(self):
        desc = super().describe()
        desc[self.name]["units"] = self._units
        return desc
