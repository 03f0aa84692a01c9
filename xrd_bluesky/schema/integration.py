"""The integration's contract: its parameters (recorded in its derived run's start
document, read back by replays and readers) and its derived streams with their units.

Streams (all intensities with their 1-sigma errors): ``primary`` (per frame, q and
2theta patterns in counts/sr, monitors, absolute-scale flag), ``absolute`` (per frame,
1/cm/sr), ``cake``, ``stitched``, ``stitched_absolute``, ``subtracted``, ``standard``
and ``rejected``; see :mod:`xrd_bluesky.callbacks.integration`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..errors import MissingMetadataError
from ..science.reduction.corrected_integration import SPLITTINGS
from ..science.reduction.integration import MIN_RADIAL_BINS
from .run_setup import InstrumentSettings
from .start import INTEGRATION, KEYS

ANALYSIS = "integration"
#: Radial units of the patterns.
RADIAL_UNITS = ("q_nm^-1", "2th_deg")
#: The options a run's start document may set (``integration: {...}``).
RUN_OPTIONS = ("cake", "npt", "split")
#: Derived start-document key: the raw run's scanned variables other than the detector
#: mount's motors, copied into ``primary`` (e.g. an applied strain).
SCAN_KEYS = "scan_keys"
#: What the ``method`` recorded says after the splitting.
_METHOD = " split, CSR (pyFAI), fused kernel"

# -- streams -----------------------------------------------------------------
ABSOLUTE_STREAM = "absolute"
CAKE_STREAM = "cake"
STITCHED_STREAM = "stitched"
STITCHED_ABSOLUTE_STREAM = "stitched_absolute"
SUBTRACTED_STREAM = "subtracted"
STANDARD_STREAM = "standard"
REJECTED_STREAM = "rejected"
#: Units of the derived data keys.
DATA_KEY_UNITS = {"q": "1/nm", "two_theta": "deg", "azimuth": "deg", "intensity_q": "counts/sr",
                  "sigma_q": "counts/sr", "intensity_2theta": "counts/sr", "sigma_2theta": "counts/sr",
                  "i0": "counts", "it": "counts", "exposure_s": "s", "flux_ph_s": "ph/s", "thickness_mm": "mm",
                  "transmission": "", "standard_factor": "", "standard_factor_sigma": "", "deviation_low": "",
                  "deviation_high": "", "radial_low": "1/nm", "radial_high": "1/nm", "stage_x": "mm",
                  "stage_y": "mm", "stage_distance": "mm", "arm_angle": "deg", "arm_translation": "mm",
                  "saturated_pixels": "pixels"}
#: Units of ``intensity`` and ``sigma`` per stream.
INTENSITY_UNITS = {ABSOLUTE_STREAM: "1/cm/sr", STITCHED_ABSOLUTE_STREAM: "1/cm/sr", SUBTRACTED_STREAM: "1/cm/sr",
                   CAKE_STREAM: "counts/sr", STITCHED_STREAM: "counts/sr"}


@dataclass(frozen=True)
class IntegrationParameters:
    """What an integration ran with.

    Attributes
    ----------
    npt : int
        Radial bins of the q and 2theta patterns.
    cake : (int, int) or None
        ``(radial, azimuthal)`` bins of the per-frame cake; None: no cake.
    split : str
        Pixel splitting (:data:`SPLITTINGS`).
    beamstop_margin_mm : float
        Margin (mm) by which the beamstop's shadow is grown before it is masked.
    instrument : InstrumentSettings
        Detector, mask, beamstop, polarization factor, monitors' flux calibration.
    radial_ranges : mapping
        Common q (1/nm) and 2theta (deg) range of every position the run visits, by
        unit (:data:`RADIAL_UNITS`); empty before the run starts.
    monitors : mapping
        Data keys of the ``i0`` and ``it`` monitors.
    image_key : str or None
        The data key of the frames.
    """

    npt: int = 2000
    cake: tuple[int, int] | None = None
    split: str = "bbox"
    beamstop_margin_mm: float = 0.5
    instrument: InstrumentSettings = InstrumentSettings()
    radial_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    monitors: Mapping[str, str] = field(default_factory=dict)
    image_key: str | None = None

    @property
    def polarization_factor(self) -> float | None:
        """pyFAI's polarization factor (None: not corrected)."""
        return self.instrument.polarization_factor

    @property
    def method(self) -> str:
        """The integration method, as recorded."""
        return f"{self.split}{_METHOD}"

    def with_options(self, options: Mapping | None) -> IntegrationParameters:
        """These parameters with a run's own options (``npt``, ``cake``, ``split``).

        Raises
        ------
        MissingMetadataError
            ``options`` is not a mapping, names an unknown option, or gives an unknown
            splitting, bins that are not integers, or too few bins (value named).
        """
        if not isinstance(options, Mapping):
            raise MissingMetadataError(f"start document {INTEGRATION!r} is {options!r}; "
                                       f"expected {KEYS[INTEGRATION].expected}")
        unknown = set(options) - set(RUN_OPTIONS)
        if unknown:
            raise MissingMetadataError(f"unknown integration options {sorted(unknown)}; known: {list(RUN_OPTIONS)}")
        split = options.get("split", self.split)
        if split not in SPLITTINGS:
            raise MissingMetadataError(f"integration option split={split!r}; use one of {SPLITTINGS}")
        npt, cake = options.get("npt", self.npt), options.get("cake", self.cake)
        try:
            npt, cake = int(npt), None if cake is None else (int(cake[0]), int(cake[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            raise MissingMetadataError(f"integration options npt={npt!r}, cake={cake!r}: expected an integer "
                                       "and a pair of integers (radial, azimuthal bins)") from None
        if npt < MIN_RADIAL_BINS or (cake is not None and min(cake) < 1):
            raise MissingMetadataError(f"integration options npt={npt}, cake={cake}: too few bins")
        return replace(self, npt=npt, cake=cake, split=split)

    def as_dict(self) -> dict:
        """The parameters as the derived run's start document records them."""
        return {"npt": self.npt, "polarization_factor": self.polarization_factor, "units": list(RADIAL_UNITS),
                "method": self.method, "radial_ranges": {k: list(v) for k, v in self.radial_ranges.items()},
                "cake": list(self.cake) if self.cake else None, "beamstop_margin_mm": self.beamstop_margin_mm,
                "monitors": dict(self.monitors), "instrument": self.instrument.as_dict(), "image_key": self.image_key}

    @classmethod
    def from_dict(cls, data: Mapping) -> IntegrationParameters:
        """Inverse of :meth:`as_dict`; keys a record lacks take their defaults (older
        records: the instrument from their beamstop, flux calibration and polarization
        factor).

        Raises
        ------
        MissingMetadataError
            The recorded mask file is gone or unreadable.
        """
        default = cls()
        method = data.get("method", default.method)
        split = method[:-len(_METHOD)] if method.endswith(_METHOD) else default.split
        cake = data.get("cake")
        return cls(npt=int(data.get("npt", default.npt)), cake=tuple(cake) if cake else None, split=split,
                   beamstop_margin_mm=data.get("beamstop_margin_mm", default.beamstop_margin_mm),
                   instrument=InstrumentSettings.recorded(data),
                   radial_ranges={k: tuple(v) for k, v in (data.get("radial_ranges") or {}).items()},
                   monitors=dict(data.get("monitors") or {}), image_key=data.get("image_key"))
