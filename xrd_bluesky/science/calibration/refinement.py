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
reason. A converged geometry must also explain its frame
(:mod:`xrd_bluesky.science.calibration.calibrant_check`): no other calibrant explaining more of
the frame's peaks and no other energy wanted by the rings (else
:class:`~xrd_bluesky.errors.AmbiguousInputError`), enough of the expected rings found
and no strong peak left unexplained (else
:class:`~xrd_bluesky.errors.CalibrationError`); a geometry is never returned silently
wrong.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pyFAI.calibrant
import pyFAI.detectors
from pyFAI.goniometer import (
    GeometryTransformation,
    GoniometerRefinement,
    SingleGeometry,
)

from ...compat.pyfai import disable_garbage_collection, set_control_points
from ...errors import CalibrationError
from ..geometry import DetectorPositionModel, Poni, StagePosition
from .calibrant_check import CalibrantCheck, check_calibration
from .settings import CalibrationSettings

logger = logging.getLogger(__name__)


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
    check: CalibrantCheck | None = None


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


def detector_with_mask(poni: Poni, image: np.ndarray, mask: np.ndarray | None):
    """A fresh detector of the geometry's model (the cached one is shared) whose mask
    adds negative pixels of ``image`` and ``mask`` to the model's own."""
    config = json.loads(poni.detector_config) if poni.detector_config else None
    det = pyFAI.detectors.detector_factory(poni.detector, config)
    bad = image < 0 if det.mask is None else (det.mask.astype(bool) | (image < 0))
    if mask is not None:
        bad = bad | mask.astype(bool)
    det.mask = bad.astype(np.int8)
    return det


#: Seed of NumPy's global generator while pyFAI extracts rings (see :func:`seeded_global_rng`).
RING_EXTRACTION_SEED = 0


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """NumPy's global generator seeded with ``seed`` inside, the caller's state restored
    after: pyFAI's ring extraction (``Massif``) shuffles its candidate points with it,
    so without a fixed seed the control points, and the geometry, differ from one
    calibration of the same frame to the next (live and replay)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


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
        Rings not found, residual too large, refinement ran away from the guess, too few
        of the rings expected on the valid pixels found, or strong peaks unexplained.
    AmbiguousInputError
        Another calibrant explains clearly more of the frame's peaks, or the rings'
        positions want another energy (see :mod:`~xrd_bluesky.science.calibration.calibrant_check`).
    """
    cal = calibrant(calibrant_name, guess.wavelength)
    det = detector_with_mask(guess, image, mask)
    start = coarse_align(image, guess, cal, det.mask.astype(bool), settings)
    sg = SingleGeometry(label, np.asarray(image, dtype=np.float32), calibrant=cal, detector=det,
                        geometry=start.integrator())
    disable_garbage_collection(sg)
    with seeded_global_rng(RING_EXTRACTION_SEED):  # the same frame always gives the same geometry
        for max_rings in settings.ring_schedule:
            points = sg.extract_cp(max_rings=max_rings, pts_per_deg=settings.points_per_degree)
            data = np.asarray(points.getList(), dtype=float).reshape(-1, 3)
            rings = len(np.unique(data[:, 2])) if len(data) else 0
            if rings < min(settings.min_rings, max_rings or settings.min_rings) or len(data) < settings.min_points:
                raise CalibrationError(
                    f"{label}: rings not found ({len(data)} control points on {rings} rings of "
                    f"{calibrant_name}; need {settings.min_points} on {settings.min_rings})")
            sg.geometry_refinement.refine3(fix=list(settings.fix))
            data = _drop_outliers(sg, data, cal, settings.outlier_cut)
            set_control_points(sg, data)
            sg.geometry_refinement.refine3(fix=list(settings.fix))
    if rings < settings.min_rings:
        raise CalibrationError(f"{label}: only {rings} rings of {calibrant_name} found; need {settings.min_rings}")
    refined = replace(Poni.from_integrator(sg.get_ai()), detector=guess.detector,
                      detector_config=guess.detector_config)
    _check_not_diverged(label, guess, refined, settings)
    res = residual_deg(refined, data, cal)
    if not res <= settings.max_residual_deg:
        raise CalibrationError(
            f"{label}: residual {res:.4f} deg above {settings.max_residual_deg} deg "
            f"(wrong calibrant {calibrant_name!r}, or a guess too far off?)")
    check = check_calibration(image, refined, calibrant_name, data, det.mask.astype(bool), label, settings, guess.dist)
    return PositionCalibration(label, refined, res, rings, len(data), position, data, check)


def coarse_align(image: np.ndarray, guess: Poni, cal, mask: np.ndarray,
                 settings: CalibrationSettings = CalibrationSettings()) -> Poni:
    """Shift the guess's PONI and distance until the brightest pixels fall on the rings.

    The ring extraction assigns pixels to rings within a quarter of the ring spacing
    of the guess; a guess a few millimetres off (common before a first calibration)
    lands outside that. The score of a geometry is the mean over the brightest pixels
    of ``exp(-dtth^2 / 2w^2)``, ``dtth`` the distance (rad) to the nearest ring. A grid
    search over PONI shifts (``settings.coarse_shift_px`` pixels) and distances
    (``settings.coarse_distance_range``, relative) at the widest width is followed by
    Nelder-Mead at the narrower widths. Tilts are left to the refinement.

    Pixel positions in the laboratory are linear in (poni1, poni2, dist) for fixed
    rotations, so they are computed once with pyFAI and shifted exactly.
    """
    from scipy.optimize import minimize

    rows, cols = _brightest_pixels(image, mask, settings.coarse_points)
    if rows.size == 0:
        return guess
    rings = np.sort(np.asarray([t for t in cal.get_2th() if t is not None], dtype=float))
    det = guess.detector_model()
    base, axes = _lab_positions(guess, rows.astype(float), cols.astype(float))
    # u = (relative distance change, PONI shift along dim1 (px), along dim2 (px))
    steps = np.array([guess.dist, det.pixel1, det.pixel2])[:, None, None] * axes

    def score(u: np.ndarray, width: float, n: int) -> np.ndarray:
        """Scores of candidates u (k x 3) on the first n bright pixels."""
        pos = base[None, :, :n] + np.einsum("kj,jcn->kcn", np.atleast_2d(u), steps[:, :, :n])
        tth = np.arctan2(np.hypot(pos[:, 1], pos[:, 2]), pos[:, 0])
        idx = np.clip(np.searchsorted(rings, tth), 1, len(rings) - 1)
        nearest = np.minimum(np.abs(tth - rings[idx - 1]), np.abs(tth - rings[idx]))
        return -np.mean(np.exp(-0.5 * (nearest / width) ** 2), axis=1)

    widths = np.radians(settings.coarse_widths_deg)
    shifts = np.arange(-settings.coarse_shift_px, settings.coarse_shift_px + 1e-9, settings.coarse_step_px)
    s1, s2 = (a.ravel() for a in np.meshgrid(shifts, shifts, indexing="ij"))
    best, best_score = np.zeros(3), np.inf
    for d in np.arange(-settings.coarse_distance_range, settings.coarse_distance_range + 1e-9, 0.01):
        grid = np.column_stack([np.full(s1.size, d), s1, s2])
        scores = score(grid, widths[0], 1500)
        if scores.min() < best_score:
            best, best_score = grid[np.argmin(scores)], scores.min()
    u = best
    simplex_steps = np.diag([0.005, settings.coarse_step_px / 2, settings.coarse_step_px / 2])
    for width in widths[1:]:
        u = minimize(lambda v, width=width: float(score(v, width, rows.size)[0]), u, method="Nelder-Mead",
                     options={"xatol": 1e-3, "fatol": 1e-6,
                              "initial_simplex": np.vstack([u, u + simplex_steps])}).x
    return replace(guess, dist=guess.dist * (1 + u[0]), poni1=guess.poni1 + u[1] * det.pixel1,
                   poni2=guess.poni2 + u[2] * det.pixel2)


def _lab_positions(poni: Poni, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Laboratory (z, y, x) positions (m) of pixels, shape (3, n), and their derivatives
    with respect to (dist, poni1, poni2), shape (3, 3, n), from pyFAI's geometry."""
    from pyFAI.geometry import Geometry

    def zyx(**change) -> np.ndarray:
        params = {k: getattr(poni, k) for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")}
        params.update({k: params[k] + v for k, v in change.items()})
        geo = Geometry(detector=poni.detector_model(), wavelength=poni.wavelength, **params)
        return np.array(geo.calc_pos_zyx(d1=rows, d2=cols))

    base = zyx()
    axes = np.stack([zyx(**{k: 1e-3}) - base for k in ("dist", "poni1", "poni2")]) / 1e-3
    return base, axes


def _brightest_pixels(image: np.ndarray, mask: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of (about) the ``n`` brightest valid pixels, shuffled."""
    valid = ~mask & np.isfinite(image)
    values = image[valid]
    if values.size == 0:
        return np.array([], int), np.array([], int)
    threshold = np.percentile(values, 100.0 * (1.0 - min(1.0, n / values.size)))
    rows, cols = np.nonzero(valid & (image >= threshold))
    order = np.random.default_rng(0).permutation(rows.size)[:n]
    return rows[order], cols[order]


def _drop_outliers(sg: SingleGeometry, data: np.ndarray, cal, cut: float) -> np.ndarray:
    """Control points within ``cut`` robust standard deviations of their ring."""
    ring_tth = np.asarray(cal.get_2th())[data[:, 2].astype(int)]
    delta = sg.geometry_refinement.tth(data[:, 0], data[:, 1]) - ring_tth
    spread = 1.4826 * np.median(np.abs(delta - np.median(delta)))
    return data[np.abs(delta - np.median(delta)) <= max(cut * spread, 1e-6)]


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
