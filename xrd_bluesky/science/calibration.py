"""Automatic geometry calibration from calibrant rings, with pyFAI.

One position: control points are extracted automatically along the rings predicted
by the current geometry (pyFAI ``SingleGeometry.extract_cp``, a "massif" peak search)
and the geometry is refined by least squares (``GeometryRefinement.refine3``);
extraction and refinement alternate a few times, so a guess a few millimetres off
converges. Several positions: pyFAI's ``GoniometerRefinement`` fits one
detector-position model (reference geometry + stage translations, see
:mod:`xrd_bluesky.science.geometry`) to the control points of all positions.

Failures (too few rings or points, a residual above the threshold, a refinement that
runs away from the guess) raise :class:`~xrd_bluesky.errors.CalibrationError` with the
reason; a geometry is never returned silently wrong.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
import pyFAI.calibrant
from pyFAI.goniometer import GeometryTransformation, GoniometerRefinement, SingleGeometry

from ..errors import CalibrationError
from .geometry import DetectorPositionModel, Poni, StagePosition

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationSettings:
    """Thresholds and effort of the automatic calibration.

    ``max_residual_deg``: largest accepted rms 2theta residual of the control points
    (deg). ``min_rings``/``min_points``: fewest rings and control points accepted.
    ``max_distance_change``: largest accepted relative change of the distance from the
    guess; ``max_centre_shift_mm``: largest accepted move of the beam centre (mm) —
    beyond these the guess was too far for automatic ring assignment.
    """

    max_residual_deg: float = 0.02
    min_rings: int = 3
    min_points: int = 50
    max_distance_change: float = 0.1
    max_centre_shift_mm: float = 10.0
    iterations: int = 3
    points_per_degree: float = 1.0
    fix: tuple[str, ...] = ("wavelength", "rot3")

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class PositionCalibration:
    """Refined geometry of one detector position and the quality of the fit."""

    label: str
    poni: Poni
    residual_deg: float
    rings: int
    points: int
    position: StagePosition | None = None
    control_points: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]


def calibrant(name: str, wavelength_m: float) -> pyFAI.calibrant.Calibrant:
    """pyFAI's calibrant ``name`` at ``wavelength_m`` (m); a clear error if unknown."""
    if name not in pyFAI.calibrant.CALIBRANT_FACTORY:
        raise CalibrationError(f"unknown calibrant {name!r}; pyFAI knows e.g. CeO2, LaB6, Si, AgBh")
    cal = pyFAI.calibrant.get_calibrant(name)
    cal.wavelength = wavelength_m
    return cal


def residual_deg(poni: Poni, points: np.ndarray, cal: pyFAI.calibrant.Calibrant) -> float:
    """RMS difference (deg) between the control points' 2theta in ``poni`` and their rings'."""
    if points is None or len(points) == 0:
        return float("nan")
    tth = poni.integrator().tth(points[:, 0], points[:, 1])
    ring_tth = np.asarray(cal.get_2th())[points[:, 2].astype(int)]
    return float(np.degrees(np.sqrt(np.mean((tth - ring_tth) ** 2))))


def _detector_with_mask(poni: Poni, image: np.ndarray, mask: np.ndarray | None):
    det = poni.detector_model().__class__() if not poni.detector_config else poni.detector_model()
    bad = image < 0 if det.mask is None else (det.mask.astype(bool) | (image < 0))
    if mask is not None:
        bad = bad | mask.astype(bool)
    det.mask = bad.astype(np.int8)
    return det


def refine_position(image: np.ndarray, guess: Poni, calibrant_name: str, *,
                    mask: np.ndarray | None = None, label: str = "frame",
                    position: StagePosition | None = None,
                    settings: CalibrationSettings = CalibrationSettings()) -> PositionCalibration:
    """Calibrate one frame from a guess geometry.

    Parameters
    ----------
    image : ndarray
        Dark-subtracted calibrant frame (counts); negative pixels are masked.
    guess : Poni
        Initial geometry (m, rad); its wavelength is the one used.
    calibrant_name : str
        pyFAI calibrant name (``"CeO2"``, ``"LaB6"``, ``"AgBh"``...).
    mask : ndarray, optional
        Extra bad pixels (True = bad), e.g. the beamstop.
    label : str
        Name of the frame in messages.
    position : StagePosition, optional
        Stage position of the frame (mm), kept with the result.
    settings : CalibrationSettings
        Thresholds.

    Raises
    ------
    CalibrationError
        Rings not found, residual too large, or refinement ran away from the guess.
    """
    cal = calibrant(calibrant_name, guess.wavelength)
    det = _detector_with_mask(guess, image, mask)
    sg = SingleGeometry(label, np.asarray(image, dtype=np.float32), calibrant=cal, detector=det,
                        geometry=guess.integrator())
    for _ in range(settings.iterations):
        points = sg.extract_cp(pts_per_deg=settings.points_per_degree)
        data = np.asarray(points.getList(), dtype=float).reshape(-1, 3)
        rings = len(np.unique(data[:, 2])) if len(data) else 0
        if rings < settings.min_rings or len(data) < settings.min_points:
            raise CalibrationError(
                f"{label}: rings not found ({len(data)} control points on {rings} rings of "
                f"{calibrant_name}; need {settings.min_points} on {settings.min_rings})")
        sg.geometry_refinement.refine3(fix=list(settings.fix))
    refined = replace(Poni.from_integrator(sg.get_ai()), detector=guess.detector,
                      detector_config=guess.detector_config)
    _check_not_diverged(label, guess, refined, settings)
    res = residual_deg(refined, data, cal)
    if not res <= settings.max_residual_deg:
        raise CalibrationError(
            f"{label}: residual {res:.4f} deg above {settings.max_residual_deg} deg "
            f"(wrong calibrant {calibrant_name!r}, or a guess too far off?)")
    return PositionCalibration(label, refined, res, rings, len(data), position, data)


def _check_not_diverged(label: str, guess: Poni, refined: Poni, settings: CalibrationSettings) -> None:
    change = abs(refined.dist - guess.dist) / guess.dist
    if not change <= settings.max_distance_change:
        raise CalibrationError(
            f"{label}: refinement moved the distance from {guess.dist * 1e3:.2f} to "
            f"{refined.dist * 1e3:.2f} mm ({change:.0%}): the guess is too far off for automatic ring assignment")
    det = guess.detector_model()
    shift = np.hypot(*((np.array(refined.beam_centre_px()) - np.array(guess.beam_centre_px()))
                       * (det.pixel1 * 1e3, det.pixel2 * 1e3)))
    if not shift <= settings.max_centre_shift_mm:
        raise CalibrationError(
            f"{label}: refinement moved the beam centre by {shift:.1f} mm: the guess is too far off")


#: Parameter names of the detector-position model in pyFAI's goniometer refinement.
MODEL_PARAMETERS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")


def fit_position_model(calibrations: list[PositionCalibration], guess: DetectorPositionModel,
                       calibrant_name: str, settings: CalibrationSettings = CalibrationSettings()
                       ) -> tuple[DetectorPositionModel, float]:
    """Fit one detector-position model to the control points of all positions.

    Returns the model and its rms residual (deg) over all control points.
    """
    if len(calibrations) < 1 or any(c.position is None for c in calibrations):
        raise CalibrationError("the position model needs calibrated frames with stage positions")
    ref = guess.reference_position
    transform = GeometryTransformation(
        param_names=[f"{p}_0" for p in MODEL_PARAMETERS], pos_names=["x", "y", "d"],
        dist_expr="dist_0 + 0.001 * (d - d_ref)", poni1_expr="poni1_0 - 0.001 * (y - y_ref)",
        poni2_expr="poni2_0 - 0.001 * (x - x_ref)",
        rot1_expr="rot1_0", rot2_expr="rot2_0", rot3_expr="rot3_0",
        constants={"x_ref": ref.x, "y_ref": ref.y, "d_ref": ref.distance})
    start = calibrations[0]
    first_ref = _back_to_reference(start.poni, start.position, ref)
    wavelength = start.poni.wavelength
    gonio = GoniometerRefinement([getattr(first_ref, p) for p in MODEL_PARAMETERS],
                                 pos_function=lambda pos: (pos.x, pos.y, pos.distance),
                                 trans_function=transform, detector=start.poni.detector_model(),
                                 wavelength=wavelength)
    cal = calibrant(calibrant_name, wavelength)
    for c in calibrations:
        gonio.new_geometry(c.label, image=None, metadata=c.position,
                           control_points=_control_points(c.control_points, cal), calibrant=cal)
    if "rot3" in settings.fix:
        gonio.bounds[MODEL_PARAMETERS.index("rot3")] = (first_ref.rot3, first_ref.rot3)
    gonio.refine2(method="slsqp")
    values = dict(zip(MODEL_PARAMETERS, (float(v) for v in gonio.param)))
    model = DetectorPositionModel(replace(first_ref, **values), ref)
    all_res = [residual_deg(model.poni_at(c.position), c.control_points, cal) ** 2 * len(c.control_points)
               for c in calibrations]
    rms = math.sqrt(sum(all_res) / sum(len(c.control_points) for c in calibrations))
    if not rms <= settings.max_residual_deg:
        raise CalibrationError(
            f"detector-position model residual {rms:.4f} deg above {settings.max_residual_deg} deg: "
            "the stage does not move the detector as the model assumes")
    return model, rms


def _back_to_reference(poni: Poni, position: StagePosition, ref: StagePosition) -> Poni:
    """The geometry at the reference stage position implied by ``poni`` at ``position``."""
    return replace(poni, dist=poni.dist - (position.distance - ref.distance) * 1e-3,
                   poni1=poni.poni1 + (position.y - ref.y) * 1e-3,
                   poni2=poni.poni2 + (position.x - ref.x) * 1e-3)


def _control_points(data: np.ndarray, cal):
    from pyFAI.control_points import ControlPoints

    cp = ControlPoints(calibrant=cal)
    for ring in np.unique(data[:, 2]).astype(int):
        rows = data[data[:, 2] == ring]
        cp.append([tuple(p) for p in rows[:, :2]], ring)
    return cp
