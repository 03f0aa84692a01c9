"""Automatic calibration of a detector on a 2theta arm from calibrant frames at several
arm angles (model and convention: :mod:`~xrd_bluesky.science.calibration.position_models`).

No control point is picked by hand:

1. coarse search: the significant bright pixels of *all* frames, jointly, are put on the
   calibrant's rings by a grid search over the arm offset, the PONI coordinate across
   the arm's motion and the distance (exact pixel positions: pyFAI's rotation matrix of
   each frame applied to the pixels' detector coordinates), refined by Nelder-Mead at
   narrower ring widths (as :func:`~xrd_bluesky.science.calibration.refinement.coarse_align` does
   for one frame);
2. per frame, pyFAI's ``SingleGeometry.extract_cp`` along the rings the current model
   predicts; points within :data:`EDGE_PX` pixels of the detector's edge or of a masked
   pixel (a ring leaving the detector peaks there), rings with fewer than
   :data:`MIN_RING_POINTS` points and frames with fewer than :data:`MIN_FRAME_POINTS`
   are dropped (frames are named in ``skipped`` with the reason);
3. one joint pyFAI ``GoniometerRefinement`` of all frames' points; points further than
   ``settings.outlier_cut`` robust standard deviations from their ring are dropped and
   the model refined again. Steps 2 and 3 alternate ``len(settings.ring_schedule)``
   times (each frame shows few rings: every round uses all rings the model predicts).

Degeneracy (see the position models): the reference's rotation about the arm's axis is
fixed at 0 (``offset_deg`` carries it). The PONI coordinate along the arm's motion is
nearly degenerate with ``offset_deg``; it is fixed in the first round and bounded to
``settings.max_centre_shift_mm`` around its coarse value afterwards, so the fit stays
well posed and the physically determined quantity, the 2theta of every pixel at every
angle, is what the data fix.

Failures raise :class:`~xrd_bluesky.errors.CalibrationError` naming the reason: too few
frames with rings, bright pixels that lie on no ring of the calibrant for any geometry
near the guess (wrong calibrant, guess too far off), a refinement that runs away from
the guess, or a residual above ``settings.max_residual_deg``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from pyFAI.geometry import Geometry
from pyFAI.goniometer import GoniometerRefinement, SingleGeometry
from scipy import ndimage
from scipy.optimize import least_squares, minimize

from ...compat.pyfai import control_points, disable_garbage_collection, set_control_points, two_theta_residuals
from ...errors import CalibrationError, ShapeMismatchError
from .position_models import ARM_PARAMETERS, PONI_PARAMETERS, ArmModel, ArmPosition
from .refinement import RING_EXTRACTION_SEED, calibrant, detector_with_mask, seeded_global_rng
from .settings import CalibrationSettings

#: Control points per degree of azimuth on each arc (an arc on a wide, narrow detector
#: spans only tens of degrees of azimuth).
ARM_POINTS_PER_DEGREE = 4.0
#: Control points closer than this (px) to the detector's edge or a masked pixel are dropped.
EDGE_PX = 3
#: Fewest control points of a ring on one frame, and of a frame, that are used.
MIN_RING_POINTS = 5
MIN_FRAME_POINTS = 10
#: Fewest frames with rings a calibration needs (offset and scale need two angles).
MIN_FRAMES = 3
#: Coarse search: arm offsets (deg) around the guess and their step; a pixel is bright
#: when it exceeds the frame's median by this many robust standard deviations.
COARSE_OFFSET_RANGE_DEG = 1.5
COARSE_OFFSET_STEP_DEG = 0.1
COARSE_DISTANCE_STEP = 0.02
BRIGHT_SIGMA = 6.0
#: Fewest of the bright pixels (fraction, weighted at the narrowest coarse width) that
#: the coarse geometry must put on a ring.
COARSE_MIN_SCORE = 0.25
#: Largest accepted change of the arm offset from the guess (deg).
MAX_OFFSET_CHANGE_DEG = 2.0
#: How far the final least squares may take the weakly determined parameters: the
#: detector's tilt across the arm's plane (deg from square; detectors are mounted square
#: to their arm to better than this), and the PONI as far as that tilt moves it.
POLISH_TILT_DEG = 1.0


@dataclass(frozen=True)
class ArmFrame:
    """One calibrant frame of the arm scan: ``image`` in dark-subtracted counts
    (negative pixels are invalid), taken at arm readings ``position`` (deg, mm)."""

    label: str
    position: ArmPosition
    image: np.ndarray


@dataclass(frozen=True)
class ArmCalibration:
    """Result of :func:`calibrate_arm`: the model, its rms residual (deg) over ``points``
    control points, the frames used, the frames skipped (label -> reason) and the
    number of rings each used frame contributed."""

    model: ArmModel
    residual_deg: float
    used: tuple[str, ...]
    skipped: dict[str, str]
    points: int
    rings_per_frame: dict[str, int]


@dataclass
class _Frame:
    """Working state of one frame: its data, bad-pixel mask, extraction and points."""

    frame: ArmFrame
    detector: object
    bad: np.ndarray
    near_bad: np.ndarray
    single: SingleGeometry | None = None
    points: np.ndarray | None = None


def calibrate_arm(frames: Sequence[ArmFrame], guess: ArmModel, calibrant_name: str, *, mask: np.ndarray | None = None,
                  settings: CalibrationSettings = CalibrationSettings(), refine_scale: bool = True) -> ArmCalibration:
    """Calibrate an arm model from calibrant frames at several arm angles.

    Parameters
    ----------
    frames : sequence of ArmFrame
        Calibrant frames (dark-subtracted counts) with their arm readings.
    guess : ArmModel
        Nominal model (a few mm, ~1 % in distance, ~0.5 deg in offset from the truth);
        its wavelength, plane and translation are used as they are.
    calibrant_name : str
        pyFAI calibrant name (``"LaB6"``, ``"CeO2"``...).
    mask : ndarray, optional
        Extra bad pixels (True = bad) of every frame.
    settings : CalibrationSettings
        Thresholds (residual, rings, points, divergence, coarse widths, outlier cut,
        ``fix``: pyFAI parameter names kept at the guess, e.g. ``"rot3"``).
    refine_scale : bool
        Refine the arm's scale (deg of rotation per deg of reading); else keep the guess's.

    Raises
    ------
    CalibrationError
        Fewer than :data:`MIN_FRAMES` frames with rings, rings not found, a wrong
        calibrant or a guess too far off, or a residual above ``settings.max_residual_deg``.
    ShapeMismatchError
        A frame (or the mask) does not have the detector's shape.
    """
    cal = calibrant(calibrant_name, guess.reference.wavelength)
    work = _prepare(frames, guess, mask)
    model = coarse_align_arm(work, guess, cal, calibrant_name, settings, refine_scale)
    skipped: dict[str, str] = {}
    rms = math.nan
    with seeded_global_rng(RING_EXTRACTION_SEED):  # the same frames always give the same model
        for round_ in range(len(settings.ring_schedule)):
            skipped = _extract(work, model, cal, calibrant_name, settings)
            used = [w for w in work if w.frame.label not in skipped]
            if len(used) < MIN_FRAMES:
                raise CalibrationError(
                    f"rings of {calibrant_name} found on {len(used)} frames, need {MIN_FRAMES}; skipped: "
                    + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
            model, rms = _refine(used, model, cal, settings, refine_scale, free_along=round_ > 0)
    _check(guess, model, rms, used, calibrant_name, settings)
    angles = [w.frame.position.angle for w in used]
    model = replace(model, calibrated_range_deg=(min(angles), max(angles)))
    return ArmCalibration(model, rms, tuple(w.frame.label for w in used), skipped,
                          int(sum(len(w.points) for w in used)),
                          {w.frame.label: len(np.unique(w.points[:, 2])) for w in used})


def _prepare(frames: Sequence[ArmFrame], guess: ArmModel, mask: np.ndarray | None) -> list[_Frame]:
    """Check the frames and build their masked detectors."""
    if len(frames) < MIN_FRAMES:
        raise CalibrationError(f"{len(frames)} frames given; an arm calibration needs at least {MIN_FRAMES}")
    labels = [f.label for f in frames]
    if len(set(labels)) != len(labels):
        raise CalibrationError(f"frame labels are not unique: {sorted({x for x in labels if labels.count(x) > 1})}")
    shape = tuple(guess.reference.detector_model().shape)
    if mask is not None and np.shape(mask) != shape:
        raise ShapeMismatchError(f"mask has shape {np.shape(mask)}, detector {guess.reference.detector!r} {shape}")
    work = []
    for f in frames:
        if np.ndim(f.image) != 2 or np.shape(f.image) != shape:
            raise ShapeMismatchError(f"frame {f.label}: shape {np.shape(f.image)}, detector "
                                     f"{guess.reference.detector!r} has {shape}")
        image = np.asarray(f.image, dtype=np.float64)
        det = detector_with_mask(guess.reference, np.where(np.isfinite(image), image, -1.0), mask)
        bad = det.mask.astype(bool)
        border = np.ones(shape, bool)
        border[1:-1, 1:-1] = False
        near_bad = ndimage.binary_dilation(bad | border, iterations=EDGE_PX)
        work.append(_Frame(replace(f, image=image), det, bad, near_bad))
    return work


# -- coarse search ------------------------------------------------------------------

def _bright_pixels(image: np.ndarray, bad: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of up to ``n`` of the brightest pixels above :data:`BRIGHT_SIGMA`
    robust standard deviations (at least the Poisson one) over the frame's median."""
    values = image[~bad]
    if values.size == 0:
        return np.array([], int), np.array([], int)
    median = np.median(values)
    sigma = max(1.4826 * np.median(np.abs(values - median)), math.sqrt(max(median, 1.0)))
    rows, cols = np.nonzero(~bad & (image > median + BRIGHT_SIGMA * sigma))
    order = np.argsort(image[rows, cols])[::-1][:n]
    return rows[order], cols[order]


def _rotation_matrices(model: ArmModel, angles: np.ndarray) -> np.ndarray:
    """pyFAI's rotation matrix of the model at each arm angle (deg), shape (n, 3, 3)."""
    ref = model.reference
    geo = Geometry(detector=ref.detector_model())
    out = []
    for angle in angles:
        param = [getattr(ref, p) for p in PONI_PARAMETERS]
        param[PONI_PARAMETERS.index(model.rotation_name)] += model.rotation_rad(angle)
        out.append(geo.rotation_matrix(param))
    return np.array(out)


def coarse_align_arm(work: list[_Frame], guess: ArmModel, cal, calibrant_name: str, settings: CalibrationSettings,
                     refine_scale: bool) -> ArmModel:
    """Move the guess's offset (deg), PONI across the arm's motion (px), distance
    (relative) and, if refined, scale until the bright pixels of all frames fall on the
    calibrant's rings (scores as in :func:`~xrd_bluesky.science.calibration.refinement.coarse_align`).

    Raises
    ------
    CalibrationError
        No bright pixel on any frame, or too few of them on the rings at the best geometry.
    """
    per_frame = max(50, settings.coarse_points // len(work))
    picks = [_bright_pixels(w.frame.image, w.bad, per_frame) for w in work]
    frame_of = np.concatenate([np.full(r.size, k) for k, (r, _) in enumerate(picks)])
    if frame_of.size == 0:
        raise CalibrationError("no bright pixel on any frame: no ring to calibrate on")
    ref = guess.reference
    det = ref.detector_model()
    p1, p2, _ = det.calc_cartesian_positions(np.concatenate([r for r, _ in picks]).astype(float),
                                             np.concatenate([c for _, c in picks]).astype(float))
    # detector coordinates relative to the PONI, pyFAI's (dim1, dim2, normal) order
    local = np.stack([p1 - ref.poni1, p2 - ref.poni2, np.full(p1.size, ref.dist)])
    across = 1 if guess.plane == "vertical" else 0  # PONI coordinate across the arm's motion
    pixel = (det.pixel1, det.pixel2)[across]
    angles = np.array([w.frame.position.angle for w in work])
    translation = 1e-3 * np.array([w.frame.position.translation for w in work])[frame_of]
    rings = np.sort(np.asarray([t for t in cal.get_2th() if t is not None], dtype=float))
    order = np.random.default_rng(0).permutation(frame_of.size)  # the grid uses a random subset

    def two_theta(u: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """2theta (rad) of pixels idx for u = (offset change deg, shift px, relative distance change, scale change)."""
        model = replace(guess, offset_deg=guess.offset_deg + u[0], scale=guess.scale * (1 + u[3]))
        mats = _rotation_matrices(model, angles)[frame_of[idx]]
        v = local[:, idx].copy()
        v[across] -= u[1] * pixel
        v[2] = v[2] * (1 + u[2]) + translation[idx]
        y, x, z = np.einsum("nij,jn->in", mats, v)
        return np.arctan2(np.hypot(y, x), z)

    def score(u: np.ndarray, width: float, idx: np.ndarray) -> float:
        tth = two_theta(u, idx)
        k = np.clip(np.searchsorted(rings, tth), 1, len(rings) - 1)
        nearest = np.minimum(np.abs(tth - rings[k - 1]), np.abs(tth - rings[k]))
        return -float(np.mean(np.exp(-0.5 * (nearest / width) ** 2)))

    widths = np.radians(settings.coarse_widths_deg)
    best = _grid_search(guess, local, across, pixel, angles, frame_of, translation, order[:1500], rings, widths[0],
                        settings)
    u = np.array([*best, 0.0])
    steps = np.diag([COARSE_OFFSET_STEP_DEG / 2, settings.coarse_step_px / 2, COARSE_DISTANCE_STEP / 2, 2e-3])
    free = slice(0, 4 if refine_scale else 3)
    for width in widths[1:]:
        start = u[free]
        res = minimize(lambda v, width=width: score(np.concatenate([v, u[len(v):]]), width, order), start,
                       method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6,
                                "initial_simplex": np.vstack([start, start + steps[free, free]])})
        u[free] = res.x
    final = -score(u, widths[-1], order)
    if final < COARSE_MIN_SCORE:
        raise CalibrationError(
            f"the bright pixels of the frames lie on no set of {calibrant_name} "
            f"rings within {COARSE_OFFSET_RANGE_DEG} deg, {settings.coarse_shift_px:g} px and "
            f"{settings.coarse_distance_range:.0%} of the guess (best: {final:.0%} of them on a ring, need "
            f"{COARSE_MIN_SCORE:.0%}): wrong calibrant, or a guess too far off")
    ref_moved = replace(ref, dist=ref.dist * (1 + u[2]),
                        **{("poni1", "poni2")[across]: getattr(ref, ("poni1", "poni2")[across]) + u[1] * pixel})
    return replace(guess, reference=ref_moved, offset_deg=guess.offset_deg + u[0], scale=guess.scale * (1 + u[3]))


def _grid_search(guess: ArmModel, local: np.ndarray, across: int, pixel: float, angles: np.ndarray,
                 frame_of: np.ndarray, translation: np.ndarray, idx: np.ndarray, rings: np.ndarray, width: float,
                 settings: CalibrationSettings) -> tuple[float, float, float]:
    """(offset change deg, PONI shift px, relative distance change) of the grid whose
    pixels ``idx`` lie best on the rings (2theta within ``width`` rad). Positions are
    linear in the shift and the distance for a fixed rotation: computed exactly."""
    shifts = np.arange(-settings.coarse_shift_px, settings.coarse_shift_px + 1e-9, settings.coarse_step_px)
    dists = np.arange(-settings.coarse_distance_range, settings.coarse_distance_range + 1e-9, COARSE_DISTANCE_STEP)
    best, best_score = (0.0, 0.0, 0.0), -np.inf
    for offset in np.arange(-COARSE_OFFSET_RANGE_DEG, COARSE_OFFSET_RANGE_DEG + 1e-9, COARSE_OFFSET_STEP_DEG):
        mats = _rotation_matrices(replace(guess, offset_deg=guess.offset_deg + offset), angles)[frame_of[idx]]
        v = local[:, idx].copy()
        v[2] += translation[idx]
        base = np.einsum("nij,jn->in", mats, v)
        d_shift = -pixel * mats[:, :, across].T  # (3, n): per pixel of PONI shift
        d_dist = local[2, idx] * mats[:, :, 2].T  # per relative distance change
        pos = (base[None, None] + shifts[:, None, None, None] * d_shift[None, None]
               + dists[None, :, None, None] * d_dist[None, None])
        tth = np.arctan2(np.hypot(pos[:, :, 0], pos[:, :, 1]), pos[:, :, 2])
        k = np.clip(np.searchsorted(rings, tth), 1, len(rings) - 1)
        nearest = np.minimum(np.abs(tth - rings[k - 1]), np.abs(tth - rings[k]))
        scores = np.mean(np.exp(-0.5 * (nearest / width) ** 2), axis=-1)
        i, j = np.unravel_index(np.argmax(scores), scores.shape)
        if scores[i, j] > best_score:
            best, best_score = (float(offset), float(shifts[i]), float(dists[j])), float(scores[i, j])
    return best


# -- extraction and joint refinement ---------------------------------------------------

def _extract(work: list[_Frame], model: ArmModel, cal, calibrant_name: str,
             settings: CalibrationSettings) -> dict[str, str]:
    """Extract control points on every frame along the rings ``model`` predicts; return
    the frames skipped, label -> reason."""
    rings = np.unique([t for t in cal.get_2th() if t is not None])
    skipped = {}
    for w in work:
        label, position = w.frame.label, w.frame.position
        poni = model.poni_at(position)
        sg = _single_geometry(w, cal, poni)
        for name in PONI_PARAMETERS:
            setattr(sg.geometry_refinement, name, getattr(poni, name))
        w.points = None
        tth = sg.geometry_refinement.center_array(w.bad.shape, unit="2th_rad", scale=False)[~w.bad]
        if tth.size == 0 or not np.any((rings >= tth.min()) & (rings <= tth.max())):
            low, high = (np.degrees([tth.min(), tth.max()]) if tth.size else (math.nan, math.nan))
            skipped[label] = (f"no ring of {calibrant_name} on the detector at arm angle {position.angle:g} deg "
                              f"(2theta {low:.2f}-{high:.2f} deg on its valid pixels)")
            continue
        data = np.asarray(sg.extract_cp(max_rings=None, pts_per_deg=ARM_POINTS_PER_DEGREE).getList(),
                          dtype=float).reshape(-1, 3)
        rows, cols = (np.clip(np.rint(data[:, k]).astype(int), 0, n - 1) for k, n in enumerate(w.bad.shape))
        data = data[~w.near_bad[rows, cols]]
        ring_ids, counts = np.unique(data[:, 2], return_counts=True)
        data = data[np.isin(data[:, 2], ring_ids[counts >= MIN_RING_POINTS])]
        if len(data) < MIN_FRAME_POINTS:
            skipped[label] = (f"only {len(data)} control points on rings of {calibrant_name} away from the edges "
                              f"at arm angle {position.angle:g} deg (need {MIN_FRAME_POINTS}): partial arcs")
            continue
        w.points = data
    return skipped


def _single_geometry(w: _Frame, cal, poni) -> SingleGeometry:
    """The frame's pyFAI ``SingleGeometry``, built once: pyFAI collects garbage while
    building one (a tenth of a second each in a large process), and its peak search's
    image analysis does not depend on the geometry (``poni``: the first one)."""
    if w.single is None:
        w.single = SingleGeometry(w.frame.label, w.frame.image.astype(np.float32), metadata=w.frame.position,
                                  calibrant=cal, detector=w.detector, geometry=poni.integrator())
        disable_garbage_collection(w.single)
    return w.single


def _axes_values(position: ArmPosition, model: ArmModel) -> float | tuple[float, float]:
    """A position as pyFAI's transformation of ``model`` takes it."""
    return (position.angle, position.translation) if model.carries_translation else position.angle


def _frame_residuals(model: ArmModel, used: list[_Frame], ring_tth: np.ndarray) -> list[np.ndarray]:
    """2theta residuals (rad) of each frame's control points in ``model``."""
    out = []
    for w in used:
        ai = model.poni_at(w.frame.position).integrator()
        out.append(ai.tth(w.points[:, 0], w.points[:, 1]) - ring_tth[w.points[:, 2].astype(int)])
    return out


def _refine(used: list[_Frame], model: ArmModel, cal, settings: CalibrationSettings, refine_scale: bool,
            free_along: bool) -> tuple[ArmModel, float]:
    """One joint pyFAI goniometer refinement of all frames' points, outliers dropped and
    refined again; returns the model and its rms residual (deg)."""
    ring_tth = np.asarray(cal.get_2th(), dtype=float)
    gonio = GoniometerRefinement(
        model.parameters(), pos_function=lambda p: _axes_values(p, model), trans_function=model.transformation(),
        detector=model.reference.detector_model(), wavelength=model.reference.wavelength)
    along = "poni1" if model.plane == "vertical" else "poni2"
    fix = {f"{model.rotation_name}_ref"} | {f"{p}_ref" for p in settings.fix if p in PONI_PARAMETERS}
    if not refine_scale:
        fix.add("scale")
    if free_along:
        value, limit = getattr(model.reference, along), 1e-3 * settings.max_centre_shift_mm
        gonio.set_bounds(f"{along}_ref", value - limit, value + limit)
    else:
        fix.add(f"{along}_ref")
    for w in used:  # the frames' own single geometries (see _single_geometry), with their points
        w.single.pos_function = gonio.pos_function
        set_control_points(w.single, w.points)
        gonio.single_geometries[w.frame.label] = w.single
    gonio.refine3(fix=sorted(fix), method="slsqp", verbose=False)
    model = _model_of(model, gonio.param)
    residuals = _frame_residuals(model, used, ring_tth)
    everything = np.concatenate(residuals)
    centre = np.median(everything)
    spread = max(1.4826 * np.median(np.abs(everything - centre)), 1e-7)
    for w, res in zip(used, residuals):
        w.points = w.points[np.abs(res - centre) <= settings.outlier_cut * spread]
        set_control_points(gonio.single_geometries[w.frame.label], w.points)
    gonio.refine3(fix=sorted(fix), method="slsqp", verbose=False)
    _polish(gonio, fix, model)
    model = _model_of(model, gonio.param)
    rms = float(np.degrees(np.sqrt(np.mean(np.concatenate(_frame_residuals(model, used, ring_tth)) ** 2))))
    return model, rms


def _polish(gonio: GoniometerRefinement, fix: set[str], model: ArmModel) -> None:
    """Least squares on the control points' 2theta residuals (trust region, parameters
    scaled by the Jacobian), from pyFAI's SLSQP result. SLSQP stops on an absolute
    tolerance (1e-12) of the mean squared residual, itself about 1e-10 rad^2, before the
    weakly determined directions (the PONI along the arm against its zero, a tilt
    against the PONI across) have converged; their errors cancel in 2theta only partly.
    Real data may not determine those directions at all (a detector that is not quite
    flat, an arm axis not quite through the sample tilt the valley): the least squares
    stays within :data:`POLISH_TILT_DEG` of a square detector and the PONI within what
    that tilt moves it (distance x tan) of pyFAI's, and a result on one of those bounds
    is not taken (the data did not decide; pyFAI's result stays)."""
    names = list(gonio.nt_param._fields)
    param0 = np.asarray(gonio.param, dtype=float)
    reach = model.reference.dist * math.tan(math.radians(POLISH_TILT_DEG))
    limits = {f"{p}_ref": (param0[names.index(f"{p}_ref")], reach) for p in ("poni1", "poni2")}
    limits["rot1_ref" if model.plane == "vertical" else "rot2_ref"] = (0.0, math.radians(POLISH_TILT_DEG))
    free = [i for i, name in enumerate(names) if name not in fix
            and not (gonio.bounds[i][0] is not None and gonio.bounds[i][0] == gonio.bounds[i][1])]
    low, high = np.full(len(free), -np.inf), np.full(len(free), np.inf)
    for j, i in enumerate(free):
        if gonio.bounds[i][0] is not None:
            low[j] = gonio.bounds[i][0]
        if gonio.bounds[i][1] is not None:
            high[j] = gonio.bounds[i][1]
        if names[i] in limits:
            centre, width = limits[names[i]]
            low[j], high[j] = max(low[j], centre - width), min(high[j], centre + width)
    start = np.clip(param0[free], low, high)

    def residuals(x: np.ndarray) -> np.ndarray:
        param = param0.copy()
        param[free] = x
        out = []
        for single in gonio.single_geometries.values():
            geometry = gonio.trans_function(param, single.get_position())._asdict()
            out.append(two_theta_residuals(single, [geometry[name] for name in PONI_PARAMETERS], gonio.wavelength,
                                           control_points(single)))
        return np.concatenate(out)

    result = least_squares(residuals, start, bounds=(low, high), x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12)
    span = np.where(np.isfinite(high - low), high - low, np.inf)
    on_bound = np.any(np.minimum(result.x - low, high - result.x) < 1e-3 * span)
    if not on_bound and np.sum(result.fun ** 2) < np.sum(residuals(param0[free]) ** 2):
        param = param0.copy()
        param[free] = result.x
        gonio.param = param


def _model_of(model: ArmModel, param: Sequence[float]) -> ArmModel:
    """``model`` with the values of :data:`ARM_PARAMETERS` ``param``."""
    values = dict(zip(ARM_PARAMETERS, (float(v) for v in param)))
    reference = replace(model.reference, **{p: values[f"{p}_ref"] for p in PONI_PARAMETERS})
    return replace(model, reference=reference, offset_deg=values["offset_deg"], scale=values["scale"])


def _check(guess: ArmModel, model: ArmModel, rms: float, used: list[_Frame], calibrant_name: str,
           settings: CalibrationSettings) -> None:
    """Raise :class:`CalibrationError` when the model ran away from the guess or does
    not explain its points."""
    change = abs(model.reference.dist - guess.reference.dist) / guess.reference.dist
    if not change <= settings.max_distance_change:
        raise CalibrationError(
            f"arm refinement moved the distance from {guess.reference.dist * 1e3:.2f} to "
            f"{model.reference.dist * 1e3:.2f} mm ({change:.0%}): the guess is too far off")
    across = "poni2" if model.plane == "vertical" else "poni1"
    shift = abs(getattr(model.reference, across) - getattr(guess.reference, across)) * 1e3
    if not shift <= settings.max_centre_shift_mm:
        raise CalibrationError(f"arm refinement moved {across} by {shift:.1f} mm: the guess is too far off")
    if not abs(model.offset_deg - guess.offset_deg) <= MAX_OFFSET_CHANGE_DEG:
        raise CalibrationError(f"arm refinement moved the offset from {guess.offset_deg:g} to {model.offset_deg:.3f} "
                               f"deg (more than {MAX_OFFSET_CHANGE_DEG} deg): the guess is too far off")
    if not rms <= settings.max_residual_deg:
        raise CalibrationError(
            f"arm model residual {rms:.4f} deg over {sum(len(w.points) for w in used)} control points of "
            f"{len(used)} frames above {settings.max_residual_deg} deg (wrong calibrant {calibrant_name!r}, "
            "or a guess too far off?)")
