"""Live geometry calibration at the end of a calibration run.

On a detector stage, for every position of the run: the dark-subtracted calibrant
frame, an initial guess from the stage motors and the nominal detector-position model
(no user input), automatic ring extraction and refinement (pyFAI); then one
detector-position model fitted over all positions. On a 2theta arm, one arm model is
fitted jointly to the rings found at every arm angle (angles with no usable ring are
skipped and named; :mod:`xrd_bluesky.science.calibration.arm`).

The derived run has a ``positions`` stream (per position: geometry, rings used; on a
stage also the residual, points, and what the frame says about the calibrant and the
energy: rings expected and found, peaks and those explained, the energy fitted from
the rings; on an arm whether the angle was used and why not) and a ``model`` stream
(the model's parameters, its detector and the whole model as JSON, ``model_json``; the
keys: :mod:`xrd_bluesky.schema.calibration`); PONI files and
the model (as pyFAI's goniometer JSON, ``goniometer.json``) are exported to
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
from ..frames import detector_position, mean_dark
from ..paths import safe_child
from ..schema import InstrumentSettings
from ..schema.calibration import (
    ARM_MODEL_KEYS,
    ARM_POSITION_KEYS,
    MODEL_KEYS,
    MODEL_STREAM,
    POSITION_KEYS,
    POSITIONS_STREAM,
    CalibrationParameters,
    geometry_data,
    model_data,
)
from ..schema.start import CALIBRATION, DARK_STREAM, PRIMARY_STREAM, check_start
from ..science.calibration.arm import ArmCalibration, ArmFrame, calibrate_arm
from ..science.calibration.calibrant_check import CalibrantCheck
from ..science.calibration.position_models import ArmModel, write_goniometer_json
from ..science.calibration.refinement import PositionCalibration, fit_position_model, refine_position
from ..science.calibration.settings import CalibrationSettings
from ..science.geometry import DetectorPositionModel, Poni
from ..science.reduction.masks import beamstop_shadow
from ..science.units import wavelength_m
from .derived import Emit, FrameRunCallback, position_data

logger = logging.getLogger(__name__)

class GeometryCalibration(FrameRunCallback):
    """Calibrate the detector geometry from a calibration run.

    Parameters
    ----------
    emit : callable
        Receives the derived run's documents.
    nominal : DetectorPositionModel or ArmModel
        The beamline's nominal geometry (initial guesses at every detector position).
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

    def __init__(self, emit: Emit, nominal: DetectorPositionModel | ArmModel, *, export_dir: str | Path | None = None,
                 instrument: InstrumentSettings = InstrumentSettings(),
                 settings: CalibrationSettings = CalibrationSettings(), provenance: dict | None = None):
        super().__init__(emit, provenance=provenance, frame_options=instrument.frame_options)
        self.nominal = nominal
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.instrument = instrument
        self.settings = settings

    def start(self, doc):
        check_start(doc, CALIBRATION)
        self.parameters = CalibrationParameters(self.nominal, self.settings, doc["calibrant"], self.instrument,
                                                doc.get("image_key"))
        self._calibrant = doc["calibrant"]
        self._nominal = self.nominal.with_wavelength(wavelength_m(doc["energy_keV"]))
        self._start = doc
        self.open_derived(doc, self.parameters.as_dict())

    def finish(self, parent_stop):
        darks = self.frames.ready(DARK_STREAM)
        dark = mean_dark(darks) if darks else 0.0
        sums: dict = {}
        for fe in self.frames.ready(PRIMARY_STREAM):
            if fe.frames is None:  # a frame that cannot be read: calibrate from the others
                logger.warning("calibration: event %s left out: %s", fe.seq_num, fe.error)
                continue
            # a fixed detector is always where its nominal geometry says
            position = detector_position(fe.event, self._start) or self._nominal.reference_position
            frames = fe.frames.astype(np.float64) - dark
            entry = sums.setdefault(position, [0.0, 0])
            entry[0] = entry[0] + frames.sum(axis=0)
            entry[1] += len(frames)
        if not sums:
            raise MissingMetadataError("calibration run has no frames in its primary stream")
        if isinstance(self._nominal, ArmModel):
            self._calibrate_arm({position: total / n for position, (total, n) in sums.items()})
            return
        calibrations = [self._calibrate(i, position, total / n)
                        for i, (position, (total, n)) in enumerate(sums.items())]
        with contextlib.redirect_stdout(io.StringIO()):  # pyFAI prints the optimiser's report
            model, rms = fit_position_model(calibrations, self._nominal, self._calibrant, self.settings)
        self._emit_results(calibrations, model, rms)

    def _calibrate(self, index: int, position, image: np.ndarray) -> PositionCalibration:
        guess = self._nominal.poni_at(position)
        label = f"position {index} (x={position.x:g}, y={position.y:g}, distance={position.distance:g} mm)"
        return refine_position(image, guess, self._calibrant, mask=self._mask(guess), label=label,
                               position=position, settings=self.settings)

    def _mask(self, guess: Poni) -> np.ndarray | None:
        """The static mask and the beamstop's shadow (with a margin) predicted by ``guess``."""
        mask = self.instrument.mask
        if self.instrument.beamstop is not None:
            shadow = beamstop_shadow(self.instrument.beamstop, guess, self.parameters.beamstop_margin_mm)
            mask = shadow if mask is None else mask | shadow
        return mask

    def _calibrate_arm(self, images: dict) -> None:
        """One arm model fitted to the rings of every arm angle; masked pixels (the
        beamstop's shadow predicted at each angle) are given to it as invalid."""
        frames = []
        for position, image in sorted(images.items(), key=lambda item: item[0].angle):
            mask = self._mask(self._nominal.poni_at(position))
            label = f"arm angle {position.angle:g} deg" + (f", translation {position.translation:g} mm"
                                                           if self._nominal.carries_translation else "")
            frames.append(ArmFrame(label, position, image if mask is None else np.where(mask, -1.0, image)))
        with contextlib.redirect_stdout(io.StringIO()):  # pyFAI prints the optimiser's report
            result = calibrate_arm(frames, self._nominal, self._calibrant, settings=self.settings)
        self._emit_arm_results(frames, result)

    def _emit_results(self, calibrations: list[PositionCalibration], model: DetectorPositionModel,
                      rms: float) -> None:
        positions = self._bundle.compose_descriptor(name=POSITIONS_STREAM, data_keys=POSITION_KEYS)
        self.emit("descriptor", positions.descriptor_doc)
        for i, c in enumerate(calibrations, start=1):
            data = {**position_data(c.position), **geometry_data(c.poni),
                    "residual_rms": c.residual_deg, "rings": c.rings, "points": c.points,
                    **_check_data(c.check)}
            self.emit("event", positions.compose_event(data=data, timestamps=_now(data), seq_num=i))
        desc = self._bundle.compose_descriptor(name=MODEL_STREAM, data_keys=MODEL_KEYS)
        self.emit("descriptor", desc.descriptor_doc)
        ref = model.reference_position
        data = {"reference_x": ref.x, "reference_y": ref.y, "reference_distance": ref.distance,
                **model_data(model), "residual_rms": rms}
        self.emit("event", desc.compose_event(data=data, timestamps=_now(data), seq_num=1))
        if self.export_dir is not None:
            self._export(calibrations, model)

    def _emit_arm_results(self, frames: list[ArmFrame], result: ArmCalibration) -> None:
        model = result.model
        desc = self._bundle.compose_descriptor(name=POSITIONS_STREAM, data_keys=ARM_POSITION_KEYS)
        self.emit("descriptor", desc.descriptor_doc)
        for i, frame in enumerate(frames, start=1):
            data = {**position_data(frame.position), **geometry_data(model.poni_at(frame.position)),
                    "rings": result.rings_per_frame.get(frame.label, 0), "used": frame.label in result.used,
                    "note": result.skipped.get(frame.label, "")}
            self.emit("event", desc.compose_event(data=data, timestamps=_now(data), seq_num=i))
        desc = self._bundle.compose_descriptor(name=MODEL_STREAM, data_keys=ARM_MODEL_KEYS)
        self.emit("descriptor", desc.descriptor_doc)
        low, high = model.calibrated_range_deg
        data = {**model_data(model), "offset_deg": model.offset_deg, "scale": model.scale, "angle_min": low,
                "angle_max": high, "residual_rms": result.residual_deg, "points": result.points, "plane": model.plane}
        self.emit("event", desc.compose_event(data=data, timestamps=_now(data), seq_num=1))
        if self.export_dir is not None:
            folder = self._export_folder()
            for i, frame in enumerate(frames):
                model.poni_at(frame.position).write(folder / f"position_{i}.poni")
            write_goniometer_json(model, folder / "goniometer.json")

    def _export(self, calibrations: list[PositionCalibration], model: DetectorPositionModel) -> None:
        folder = self._export_folder()
        for i, c in enumerate(calibrations):
            c.poni.write(folder / f"position_{i}.poni")
        model.reference.write(folder / "model_reference.poni")
        (folder / "model.json").write_text(json.dumps(model.as_dict(), indent=2))
        write_goniometer_json(model, folder / "goniometer.json")

    def _export_folder(self) -> Path:
        folder = safe_child(self.export_dir, self._bundle.start_doc["uid"])
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _check_data(check: CalibrantCheck) -> dict:
    """The positions stream's record of the checks of the calibrant and the energy."""
    return {"rings_expected": check.rings_expected, "rings_found": check.rings_found, "peaks": check.peaks,
            "peaks_explained": check.peaks_explained, "fitted_energy": check.fitted_energy_keV,
            "fitted_energy_sigma": check.fitted_energy_sigma_keV}


def _now(data: dict) -> dict:
    now = time.time()
    return {k: now for k in data}
