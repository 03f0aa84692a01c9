"""Motorised stages: the detector stage, the detector's 2theta arm and the DF-XRM goniometer."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, SoftPositioner

from ..science.calibration.position_models import ArmPosition
from ..science.dfxrm.orientation import GoniometerAngles
from ..science.geometry import StagePosition


class DetectorStage(Device):
    """Detector stage with transverse motors ``x``, ``y`` and the ``distance`` motor (mm).

    Axis convention: see :mod:`xrd_bluesky.science.geometry`.
    """

    x = Cpt(SoftPositioner, egu="mm", init_pos=0.0)
    y = Cpt(SoftPositioner, egu="mm", init_pos=0.0)
    distance = Cpt(SoftPositioner, egu="mm", init_pos=300.0)

    def position_now(self) -> StagePosition:
        """Current motor positions (mm)."""
        return StagePosition(float(self.x.position), float(self.y.position), float(self.distance.position))


class DetectorArm(Device):
    """2theta arm carrying the detector: ``angle`` (deg), a rotation about an axis
    through the sample.

    Convention: see :mod:`xrd_bluesky.science.calibration.position_models`.
    """

    angle = Cpt(SoftPositioner, egu="deg", init_pos=0.0)

    def position_now(self) -> ArmPosition:
        """Current arm angle (deg)."""
        return ArmPosition(float(self.angle.position))


class Goniometer(Device):
    """Sample goniometer: ``omega`` (vertical axis), ``chi`` and ``phi`` (deg).

    Axis convention: see :mod:`xrd_bluesky.science.dfxrm.orientation`.
    """

    omega = Cpt(SoftPositioner, egu="deg", init_pos=0.0)
    chi = Cpt(SoftPositioner, egu="deg", init_pos=0.0)
    phi = Cpt(SoftPositioner, egu="deg", init_pos=0.0)

    def angles(self) -> GoniometerAngles:
        """Current motor positions (deg)."""
        return GoniometerAngles(float(self.omega.position), float(self.chi.position), float(self.phi.position))
