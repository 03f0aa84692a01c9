"""The frame registry: document references (StreamResource/StreamDatum,
Resource/Datum, inline arrays) resolved to frames. Analyses never open files."""

from .registry import FrameEvent, FrameRegistry, detector_config, frames_per_event, mean_dark, stage_position

__all__ = ["FrameEvent", "FrameRegistry", "detector_config", "frames_per_event", "mean_dark", "stage_position"]
