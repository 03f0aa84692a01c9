"""Where an analysis gets its detector geometry, and how it says so."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..geometry import DetectorPositionModel, Poni, StagePosition
from ..units import wavelength_m
from .position_models import ArmModel, ArmPosition


@dataclass(frozen=True)
class GeometrySource:
    """A detector-position model (a stage's or an arm's) with a label saying where it
    came from.

    ``label`` is recorded in every derived run: ``"calibration"`` (then
    ``calibration_uid`` names the calibration run), ``"poni_file"``, ``"nominal"``
    (the beamline description's nominal geometry, before any calibration), or
    ``"simulator_truth"`` (tests that pin the simulated beamline's true geometry).
    """

    model: DetectorPositionModel | ArmModel
    label: str
    calibration_uid: str | None = None
    follows_stage: bool = True

    @classmethod
    def from_poni(cls, poni: Poni, label: str = "poni_file") -> GeometrySource:
        """A fixed geometry that ignores the stage position."""
        return cls(DetectorPositionModel(poni, StagePosition(0.0, 0.0, 0.0)), label, follows_stage=False)

    def poni(self, position: StagePosition | ArmPosition | None, energy_keV: float | None) -> Poni:
        """Geometry at a detector position (stage, mm; arm, deg) and photon energy (keV)."""
        poni = self.model.reference
        if self.follows_stage and position is not None:
            poni = self.model.poni_at(position)
        if energy_keV is not None:
            poni = replace(poni, wavelength=wavelength_m(energy_keV))
        return poni

    def provenance(self) -> dict:
        """What a derived run's start document records about its geometry."""
        return {"source": self.label, "calibration_uid": self.calibration_uid,
                "follows_stage": self.follows_stage, "model": self.model.as_dict()}
