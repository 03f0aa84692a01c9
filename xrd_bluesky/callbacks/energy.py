"""Runs whose photon energy is recorded in their data, not in their start document.

A beamline description may say that the energy is the data key of a monochromator
signal (``[energy] key = "mono_energy"``). Such a run's start document has no
``energy_keV``, and the analysis needs it from the start (wavelength, radial ranges).
:class:`EnergyFromData` holds the run's documents until a descriptor's configuration
or an event carries that key, then starts the analysis with the energy in its start
document and hands it the held documents. A run that ends without it gets a derived
run that says so.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping

from ..schema.start import ENERGY_KEV

#: ``build(start) -> callback``: the analysis of the run that ``start`` opens.
Build = Callable[[dict], Callable[[str, dict], object]]


class EnergyFromData:
    """Start the analysis once the run's photon energy is known.

    Parameters
    ----------
    build : callable
        ``build(start)`` returns the analysis for a start document holding
        ``energy_keV``.
    refuse : callable
        ``refuse(reason)`` returns a callback that ends the derived run ``fail`` with
        ``reason``.
    start : dict
        The run's (completed) start document.
    key : str
        The data key of the energy.
    keV_per_unit : float
        Its unit in keV (1 for keV, 1e-3 for eV).
    """

    def __init__(self, build: Build, refuse: Callable[[str], Callable[[str, dict], object]], start: dict, key: str,
                 keV_per_unit: float):
        self.build, self.refuse = build, refuse
        self.start, self.key, self.keV_per_unit = start, key, keV_per_unit
        self._held: list[tuple[str, dict]] = []
        self._descriptors: set[str] = set()  # descriptors whose events carry the key
        self._callback: Callable[[str, dict], object] | None = None

    def __call__(self, name: str, doc: dict):
        if self._callback is not None:
            return self._callback(name, doc)
        if name == "start":
            return None
        self._held.append((name, doc))
        found = self._energy(name, doc)
        if found is None and name != "stop":
            return None
        if found is None:
            self._begin(self.start, self.refuse(
                f"the photon energy (data key {self.key!r}, [energy] key of the beamline description) was never "
                "recorded in this run"))
        elif isinstance(found, str):
            self._begin(self.start, self.refuse(found))
        else:
            start = {**self.start, ENERGY_KEV: found}
            self._begin(start, self.build(start))
        return None

    def _begin(self, start: dict, callback: Callable[[str, dict], object]) -> None:
        self._callback = callback
        callback("start", start)
        held, self._held = self._held, []
        for name, doc in held:
            callback(name, doc)

    def _energy(self, name: str, doc: dict) -> float | str | None:
        """The energy (keV) in ``doc``, a reason it is unusable, or None if absent."""
        if name == "descriptor":
            if self.key in (doc.get("data_keys") or {}):
                self._descriptors.add(doc.get("uid"))
            for device, config in (doc.get("configuration") or {}).items():
                data = config.get("data") if isinstance(config, Mapping) else None
                if isinstance(data, Mapping) and self.key in data:
                    return self._keV(data[self.key], f"configuration {device!r} of descriptor {doc.get('uid')}")
        elif name in ("event", "event_page") and doc.get("descriptor") in self._descriptors:
            value = doc["data"][self.key]
            return self._keV(value[0] if name == "event_page" else value, f"{name} {doc.get('uid')}")
        return None

    def _keV(self, value: object, where: str) -> float | str:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            return f"photon energy {self.key}={value!r} in {where} is not a positive number"
        return float(value) * self.keV_per_unit
