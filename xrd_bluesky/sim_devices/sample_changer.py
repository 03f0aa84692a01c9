"""Sample changer holding samples from the sample library."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device

from ..errors import SampleError
from ..science.sim.samples import PowderSample, Sample
from .signals import UnitSignal


class SampleChanger(Device):
    """Puts one sample of ``library`` in the beam.

    ``slot`` is the sample's name; ``strain`` is the applied strain (dimensionless) of
    crystalline samples: the lattice strain itself for an isotropic powder, through its
    tensile response for a specimen that has one (the Mg of a tensile test).
    """

    slot = Cpt(UnitSignal, value="empty", units="", kind="config")
    strain = Cpt(UnitSignal, value=0.0, units="", kind="config")

    def __init__(self, *args, library: dict[str, Sample], **kwargs):
        super().__init__(*args, **kwargs)
        self.library = library
        self.slot.subscribe(self._check_slot, run=False)

    def _check_slot(self, value, **kwargs):
        if value not in self.library:
            raise SampleError(f"no sample {value!r} in the sample changer; known: {sorted(self.library)}")

    def sample(self) -> Sample:
        """The sample in the beam now, with the current strain applied."""
        name = self.slot.get()
        if name not in self.library:
            raise SampleError(f"no sample {name!r} in the sample changer; known: {sorted(self.library)}")
        sample = self.library[name]
        strain = float(self.strain.get())
        if strain and isinstance(sample, PowderSample):
            sample = sample.under_load(strain)
        return sample
