"""Live geometry calibration at the end of a calibration run.

For every detector-stage position of the run: the dark-subtracted calibrant frame,
an initial guess from the stage motors and the nominal detector-position model (no
user input), automatic ring extraction and refinement (pyFAI); then one
detector-position model fitted over all positions. The derived run has a
``positions`` stream (per position: geometry, residual, rings and points used, and
what the frame says about the calibrant and the energy: rings expected and found,
peaks and those explained, the energy fitted from the rings) and a ``model`` stream
(the model's parameters); PONI files and the model are exported to
``<export_dir>/<derived uid>/``. Any failure ends the derived run with
``exit_status="fail"`` and the reason; the previous good calibration stays current.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from pathlib import Path

import numpy as np

from ..errors import MissingMetadataError
from ..paths import safe_child
from ..schema import InstrumentSettings
from ..science.calibrant_check import CalibrantCheck
from ..science.calibration import CalibrationSettings, PositionCalibration, fit_position_model, refine_position
from ..science.geometry import DetectorPositionModel, StagePosition
from ..science.image_formation import pixel_geometry
from ..science.units import wavelength_m
from .derived import Emit, FrameRunCallback, require_keys
from ..sources.frames import mean_dark, stage_position

logger = logging.getLogger(__name__)

#: Margin (mm) added around the beamstop shadow predicted by the guess geometry.
GUESS_BEAMSTOP_MARGIN_MM = 2.0
_SCALAR = {"dtype": "number", "shape": [], "source": "xrd_bluesky"}
POSITION_KEYS = {
    **{f"stage_{a}": {**_SCALAR, "units": "mm"} for a in ("x", "y", "distance")},
    **{k: {**_SCALAR, "units": "m"} for k in ("dist", "poni1", "poni2", "wavelength")},
    **{k: {**_SCALAR, "units": "rad"} for k in ("rot1", "rot2", "rot3")},
    "beam_centre_row": {**_SCALAR, "units": "px"}, "beam_centre_column": {**_SCALAR, "units": "px"},
    "residual_rms": {**_SCALAR, "units": "deg"},
    "rings": {**_SCALAR, "dtype": "integer", "units": ""},
    "points": {**_SCALAR, "dtype": "integer", "units": ""},
    # what the frame says about the calibrant and the energy (science.calibrant_check)
    **{k: {**_SCALAR, "dtype": "integer", "units": ""} for k in ("rings_expected", "rings_found", "peaks",
                                                                  "peaks_explained")},
    **{k: {**_SCALAR, "units": "keV"} for k in ("fitted_energy", "fitted_energy_sigma")},
}
MODEL_KEYS = {
    **{f"reference_{a}": {**_SCALAR, "units": "mm"} for a in ("x", "y", "distance")},
    **{k: {**_SCALAR, "units": "m"} for k in ("dist", "poni1", "poni2", "wavelength")},
    **{k: {**_SCALAR, "units": "rad"} for k in ("rot1", "rot2", "rot3")},
    "residual_rms": {**_SCALAR, "units": "deg"},
    "detector": {"dtype": "string", "shape": [], "source": "xrd_bluesky", "units": ""},
}


class GeometryCalibration(FrameRunCallback):
    """Calibrate the detector geometry from a calibration run.

    Parameters
    ----------
    emit : callable
        Receives the derived run's documents.
    nominal : DetectorPositionModel
        The beamline's nominal geometry (initial guesses at every stage position).
    export_dir : path, optional
        Where PONI files and the model are written.
    instrument : InstrumentSettings
        The beamstop (masked, with a margin, around its shadow predicted by the
        guess), the static mask and the frame storage.
    settings : CalibrationSettings
        Thresholds.
    provenance : dict, optional
        Extra start-document keys of the derived run (see :class:`DerivedRunCallback`).
    """

    analysis = "calibration"

    def __init__(self, emit: Emit, nominal: DetectorPositionModel, *, export_dir: str | Path | None = None,
                 instrument: InstrumentSettings = InstrumentSettings(),
                 settings: CalibrationSettings = CalibrationSettings(), provenance: dict | None = None):
        super().__init__(emit, provenance=provenance, frame_options=instrument.frame_options)
        self.nominal = nominal
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.instrument = instrument
        self.settings = settings

    def start(self, doc):
        require_keys(doc, ("calibrant", "energy_keV"), "calibration run")
        self._calibrant = doc["calibrant"]
        self._nominal = self.nominal.with_wavelength(wavelength_m(doc["energy_keV"]))
        self._stage_keys = doc.get("stage_motors")
        self.open_derived(doc, {"nominal": self.nominal.as_dict(), "settings": self.settings.as_dict(),
                                "calibrant": self._calibrant, "instrument": self.instrument.as_dict(),
                                "image_key": doc.get("image_key"),
                                "beamstop": self.instrument.beamstop.as_dict() if self.instrument.beamstop else None,
                                "beamstop_margin_mm": GUESS_BEAMSTOP_MARGIN_MM})

    def finish(self, parent_stop):
        darks = self.frames.ready("dark")
        dark = mean_dark(darks) if darks else 0.0
        sums: dict[StagePosition, list] = {}
        for fe in self.frames.ready("primary"):
            if fe.frames is None:  # a frame that cannot be read: calibrate from the others
                logger.warning("calibration: event %s left out: %s", fe.seq_num, fe.error)
                continue
            # a fixed detector is always where its nominal geometry says
            position = stage_position(fe.event, self._stage_keys) or self._nominal.reference_position
            frames = fe.frames.astype(np.float64) - dark
            entry = sums.setdefault(position, [0.0, 0])
            entry[0] = entry[0] + frames.sum(axis=0)
            entry[1] += len(frames)
        if not sums:
            raise MissingMetadataError("calibration run has no frames in its primary stream")
        calibrations = [self._calibrate(i, position, total / n)
                        for i, (position, (total, n)) in enumerate(sums.items())]
        with contextlib.redirect_stdout(io.StringIO()):  # pyFAI prints the optimiser's report
            model, rms = fit_position_model(calibrations, self._nominal, self._calibrant, self.settings)
        self._emit_results(calibrations, model, rms)

    def _calibrate(self, index: int, position: StagePosition, image: np.ndarray) -> PositionCalibration:
        guess = self._nominal.poni_at(position)
        mask = self.instrument.mask
        if self.instrument.beamstop is not None:
            shadow = self.instrument.beamstop.shadow(pixel_geometry(guess), margin_mm=GUESS_BEAMSTOP_MARGIN_MM)
            mask = shadow if mask is None else mask | shadow
        label = f"position {index} (x={position.x:g}, y={position.y:g}, distance={position.distance:g} mm)"
        return refine_position(image, guess, self._calibrant, mask=mask, label=label,
                               position=position, settings=self.settings)

    def _emit_results(self, calibrations: list[PositionCalibration], model: DetectorPositionModel,
                      rms: float) -> None:
        positions = self._bundle.compose_descriptor(name="positions", data_keys=POSITION_KEYS)
        self.emit("descriptor", positions.descriptor_doc)
        for i, c in enumerate(calibrations, start=1):
            row, col = c.poni.beam_centre_px()
            data = {"stage_x": c.position.x, "stage_y": c.position.y, "stage_distance": c.position.distance,
                    **{k: getattr(c.poni, k) for k in ("dist", "poni1", "poni2", "wavelength", "rot1", "rot2", "rot3")},
                    "beam_centre_row": row, "beam_centre_column": col,
                    "residual_rms": c.residual_deg, "rings": c.rings, "points": c.points,
                    **_check_data(c.check)}
            self.emit("event", positions.compose_event(data=data, timestamps=_now(data), seq_num=i))
        desc = self._bundle.compose_descriptor(name="model", data_keys=MODEL_KEYS)
        self.emit("descriptor", desc.descriptor_doc)
        ref = model.reference_position
        data = {"reference_x": ref.x, "reference_y": ref.y, "reference_distance": ref.distance,
                **{k: getattr(model.reference, k) for k in ("dist", "poni1", "poni2", "wavelength", "rot1", "rot2", "rot3")},
                "residual_rms": rms, "detector": model.reference.detector}
        self.emit("event", desc.compose_event(data=data, timestamps=_now(data), seq_num=1))
        if self.export_dir is not None:
            self._export(calibrations, model)

    def _export(self, calibrations: list[PositionCalibration], model: DetectorPositionModel) -> None:
        folder = safe_child(self.export_dir, self._bundle.start_doc["uid"])
        folder.mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(calibrations):
            c.poni.write(folder / f"position_{i}.poni")
        model.reference.write(folder / "model_reference.poni")
        (folder / "model.json").write_text(json.dumps(model.as_dict(), indent=2))


def _check_data(check: CalibrantCheck) -> dict:
    """The positions stream's record of the checks of the calibrant and the energy."""
    return {"rings_expected": check.rings_expected, "rings_found": check.rings_found, "peaks": check.peaks,
            "peaks_explained": check.peaks_explained, "fitted_energy": check.fitted_energy_keV,
            "fitted_energy_sigma": check.fitted_energy_sigma_keV}


def _now(data: dict) -> dict:
    now = time.time()
    return {k: now for k in data}
