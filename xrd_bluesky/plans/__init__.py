"""Bluesky plans of xrd-bluesky. They take any devices that follow the Bluesky
protocols, simulated or real."""

from .calibration import DEFAULT_CALIBRATION_POSITIONS, calibration_scan
from .counting import dark_run, multi_position_count, take_darks
from .dfxrm import dfxrm_align, rocking_scan
from .gain_map import gain_map_scan
from .strain_series import strain_series

__all__ = ["DEFAULT_CALIBRATION_POSITIONS", "calibration_scan", "dark_run", "dfxrm_align", "gain_map_scan",
           "multi_position_count", "rocking_scan", "strain_series", "take_darks"]
