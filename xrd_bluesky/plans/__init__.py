"""Bluesky plans of xrd-bluesky. They take any devices that follow the Bluesky
protocols, simulated or real."""

from .counting import multi_position_count, take_darks

__all__ = ["multi_position_count", "take_darks"]
