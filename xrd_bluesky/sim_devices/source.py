"""X-ray source: energy, photon flux and the fast shutter."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device

from .signals import UnitSignal

SHUTTER_OPEN = "open"
SHUTTER_CLOSED = "closed"


class Source(Device):
    """Monochromatic beam: ``energy`` (keV), ``flux`` (ph/s) and a fast ``shutter``
    (``"open"``/``"closed"``). No photons reach the sample while the shutter is closed."""

    energy = Cpt(UnitSignal, value=17.0, units="keV", kind="config")
    flux = Cpt(UnitSignal, value=1.0e11, units="ph/s", kind="config")
    shutter = Cpt(UnitSignal, value=SHUTTER_OPEN, units="", kind="config")

    def photons_per_second(self) -> float:
        """Flux on the sample now (ph/s): zero with the shutter closed."""
        return float(self.flux.get()) if self.shutter.get() == SHUTTER_OPEN else 0.0
