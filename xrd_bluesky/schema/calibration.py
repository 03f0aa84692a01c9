"""The calibration's contract: its parameters (recorded in its derived run's start
document, read back by replays), its derived streams and their keys, and the detector
position model its ``model`` stream holds (written by the analysis, read by every
reader of calibrations).

Streams: ``positions`` (per detector position or arm angle: the geometry, rings used
and, on a stage, the residual, points and the checks of the calibrant and the energy)
and ``model`` (the model's parameters, the detector and its pyFAI configuration, and
the whole model as JSON, ``model_json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from ..science.calibration.position_models import ArmModel, PositionModel, position_model_from_dict
from ..science.calibration.settings import CalibrationSettings
from ..science.geometry import DetectorPositionModel, Poni, StagePosition
from .run_setup import InstrumentSettings

ANALYSIS = "calibration"
POSITIONS_STREAM = "positions"
MODEL_STREAM = "model"
#: Margin (mm) added around the beamstop shadow predicted by the guess geometry.
GUESS_BEAMSTOP_MARGIN_MM = 2.0
#: A geometry's PONI parameters: lengths and wavelength (m), rotations (rad).
PONI_KEYS = ("dist", "poni1", "poni2", "wavelength", "rot1", "rot2", "rot3")

_SCALAR = {"dtype": "number", "shape": [], "source": "xrd_bluesky"}
_TEXT = {"dtype": "string", "shape": [], "source": "xrd_bluesky", "units": ""}
_COUNT = {**_SCALAR, "dtype": "integer", "units": ""}
_PONI = {**{k: {**_SCALAR, "units": "m"} for k in ("dist", "poni1", "poni2", "wavelength")},
         **{k: {**_SCALAR, "units": "rad"} for k in ("rot1", "rot2", "rot3")}}
#: A geometry's keys: PONI lengths and wavelength (m), rotations (rad), beam centre (px).
GEOMETRY_KEYS = {**_PONI, "beam_centre_row": {**_SCALAR, "units": "px"},
                 "beam_centre_column": {**_SCALAR, "units": "px"}}
#: The detector of a model: its pyFAI name and configuration (JSON; "" when the name says it all).
DETECTOR_KEYS = {"detector": _TEXT, "detector_config": _TEXT}
#: Per stage position: where, the geometry, the fit and the checks of the calibrant and the energy.
POSITION_KEYS = {
    **{f"stage_{a}": {**_SCALAR, "units": "mm"} for a in ("x", "y", "distance")},
    **GEOMETRY_KEYS,
    "residual_rms": {**_SCALAR, "units": "deg"}, "rings": _COUNT, "points": _COUNT,
    **{k: _COUNT for k in ("rings_expected", "rings_found", "peaks", "peaks_explained")},
    **{k: {**_SCALAR, "units": "keV"} for k in ("fitted_energy", "fitted_energy_sigma")},
}
#: The stage model: its reference position (mm) and geometry there.
MODEL_KEYS = {
    **{f"reference_{a}": {**_SCALAR, "units": "mm"} for a in ("x", "y", "distance")},
    **_PONI, "residual_rms": {**_SCALAR, "units": "deg"}, **DETECTOR_KEYS, "model_json": _TEXT,
}
#: Per arm angle: the model's geometry there, rings found, whether it was used and why not.
ARM_POSITION_KEYS = {
    "arm_angle": {**_SCALAR, "units": "deg"}, "arm_translation": {**_SCALAR, "units": "mm"},
    **GEOMETRY_KEYS, "rings": _COUNT,
    "used": {"dtype": "boolean", "shape": [], "source": "xrd_bluesky", "units": ""}, "note": _TEXT,
}
#: The arm model: its geometry at zero rotation, zero offset, scale, calibrated range.
ARM_MODEL_KEYS = {
    **_PONI, "offset_deg": {**_SCALAR, "units": "deg"}, "scale": {**_SCALAR, "units": "deg/deg"},
    "angle_min": {**_SCALAR, "units": "deg"}, "angle_max": {**_SCALAR, "units": "deg"},
    "residual_rms": {**_SCALAR, "units": "deg"}, "points": _COUNT, "plane": _TEXT, **DETECTOR_KEYS,
    "model_json": _TEXT,
}


@dataclass(frozen=True)
class CalibrationParameters:
    """What a calibration ran with.

    Attributes
    ----------
    nominal : PositionModel
        The nominal geometry it started from.
    settings : CalibrationSettings
        Its thresholds.
    calibrant : str or None
        The pyFAI calibrant.
    instrument : InstrumentSettings
        Beamstop, static mask and frame storage.
    image_key : str or None
        The data key of the frames.
    beamstop_margin_mm : float
        Margin (mm) around the beamstop's shadow predicted by the guess.
    """

    nominal: PositionModel
    settings: CalibrationSettings = CalibrationSettings()
    calibrant: str | None = None
    instrument: InstrumentSettings = InstrumentSettings()
    image_key: str | None = None
    beamstop_margin_mm: float = GUESS_BEAMSTOP_MARGIN_MM

    def as_dict(self) -> dict:
        """The parameters as the derived run's start document records them."""
        beamstop = self.instrument.beamstop
        return {"nominal": self.nominal.as_dict(), "settings": self.settings.as_dict(), "calibrant": self.calibrant,
                "instrument": self.instrument.as_dict(), "image_key": self.image_key,
                "beamstop": beamstop.as_dict() if beamstop else None, "beamstop_margin_mm": self.beamstop_margin_mm}

    @classmethod
    def from_dict(cls, data: Mapping) -> CalibrationParameters:
        """Inverse of :meth:`as_dict` (keys a record lacks take their defaults).

        Raises
        ------
        GeometryError
            The nominal model cannot be rebuilt.
        MissingMetadataError
            The recorded mask file is gone or unreadable.
        """
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in (data.get("settings") or {}).items()}
        return cls(position_model_from_dict(data["nominal"]), CalibrationSettings(**settings),
                   calibrant=data.get("calibrant"), instrument=InstrumentSettings.recorded(data),
                   image_key=data.get("image_key"),
                   beamstop_margin_mm=data.get("beamstop_margin_mm", GUESS_BEAMSTOP_MARGIN_MM))


def geometry_data(poni: Poni) -> dict:
    """A geometry's data keys (:data:`GEOMETRY_KEYS`)."""
    row, col = poni.beam_centre_px()
    return {**poni_data(poni), "beam_centre_row": row, "beam_centre_column": col}


def poni_data(poni: Poni) -> dict:
    """A geometry's PONI parameters (:data:`PONI_KEYS`)."""
    return {k: getattr(poni, k) for k in PONI_KEYS}


def model_data(model: DetectorPositionModel | ArmModel) -> dict:
    """What the ``model`` stream records of any model besides its fit: the geometry of
    its reference, its detector (name and pyFAI configuration) and the whole model as
    JSON (:data:`MODEL_KEYS`, :data:`ARM_MODEL_KEYS`)."""
    return {**poni_data(model.reference), "detector": model.reference.detector,
            "detector_config": model.reference.detector_config, "model_json": json.dumps(model.as_dict())}


def model_from_data(row: Mapping) -> PositionModel:
    """The model of a ``model`` event's data: the whole model (``model_json``) or, in
    calibrations recorded before it was, the stage model of its parameters.

    Raises
    ------
    GeometryError
        The model cannot be rebuilt.
    """
    if "model_json" in row:
        return position_model_from_dict(json.loads(str(row["model_json"])))
    poni = Poni(**{k: float(row[k]) for k in PONI_KEYS}, detector=str(row["detector"]),
                detector_config=str(row.get("detector_config", "")))
    reference = StagePosition(float(row["reference_x"]), float(row["reference_y"]), float(row["reference_distance"]))
    return DetectorPositionModel(poni, reference)
