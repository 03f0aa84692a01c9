"""The frame registry: document references (StreamResource/StreamDatum,
Resource/Datum, inline arrays) resolved to frames. Analyses never open files: every
frame file, referred to by a document or named on the command line, is read by
:mod:`.reader`."""

from .registry import (
                       FrameEvent,
                       FrameRegistry,
                       arm_position,
                       detector_config,
                       detector_position,
                       frames_per_event,
                       mean_dark,
                       planned_positions,
                       stage_position,
)

__all__ = ["FrameEvent", "FrameRegistry", "arm_position", "detector_config", "detector_position", "frames_per_event",
           "mean_dark", "planned_positions", "stage_position"]
