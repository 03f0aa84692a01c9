"""Ophyd devices of a simulated XRD beamline (physics in :mod:`xrd_bluesky.science`)."""

from .beamline import Beamline, BeamlineConfig, arm_config, make_beamline

__all__ = ["Beamline", "BeamlineConfig", "arm_config", "make_beamline"]
