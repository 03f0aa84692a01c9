"""The gain map's contract: its parameters (recorded in its derived run's start document,
read back by replays) and its derived streams.

Streams: ``gain_map`` (one event: ``gain``, ``bad`` and ``gain_sigma``, detector-shaped;
``corrected = raw / gain``, ``bad`` 1 for a bad pixel) and ``statistics`` (one event:
the computation's figures, photons in ``photons`` keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..science.gain_map.method import GainMapSettings
from .run_setup import InstrumentSettings

ANALYSIS = "gain_map"
GAIN_MAP_STREAM = "gain_map"
STATISTICS_STREAM = "statistics"
#: The gain map's keys: (numpy dtype, units).
GAIN_MAP_KEYS = {"gain": ("<f4", ""), "bad": ("|u1", ""), "gain_sigma": ("<f4", "")}
#: Margin (mm) around the predicted beamstop shadow that is left out of the gain map.
BEAMSTOP_MARGIN_MM = 0.5


@dataclass(frozen=True)
class GainMapParameters:
    """What a gain map was computed with.

    Attributes
    ----------
    settings : GainMapSettings
        The method's parameters.
    instrument : InstrumentSettings
        Beamstop, static mask, saturation and frame storage.
    image_key : str or None
        The data key of the frames.
    beamstop_margin_mm : float
        Margin (mm) around the predicted beamstop shadow left out.
    """

    settings: GainMapSettings = GainMapSettings()
    instrument: InstrumentSettings = InstrumentSettings()
    image_key: str | None = None
    beamstop_margin_mm: float = BEAMSTOP_MARGIN_MM

    def as_dict(self) -> dict:
        """The parameters as the derived run's start document records them."""
        beamstop = self.instrument.beamstop
        return {"settings": self.settings.as_dict(), "instrument": self.instrument.as_dict(),
                "image_key": self.image_key, "beamstop": beamstop.as_dict() if beamstop else None,
                "beamstop_margin_mm": self.beamstop_margin_mm}

    @classmethod
    def from_dict(cls, data: Mapping) -> GainMapParameters:
        """Inverse of :meth:`as_dict` (keys a record lacks take their defaults).

        Raises
        ------
        MissingMetadataError
            The recorded mask file is gone or unreadable.
        """
        return cls(GainMapSettings(**(data.get("settings") or {})), InstrumentSettings.recorded(data),
                   data.get("image_key"), data.get("beamstop_margin_mm", BEAMSTOP_MARGIN_MM))
