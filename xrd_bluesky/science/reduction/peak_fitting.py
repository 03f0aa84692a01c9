"""Fast single-peak fits with honest uncertainties: Gaussian or pseudo-Voigt on a
constant or linear background, by Levenberg-Marquardt with analytic derivatives.

Parameters, in this order: centre, FWHM, height (peak maximum above background),
eta (pseudo-Voigt Lorentzian fraction, 0-1; absent for a Gaussian), b0, and b1 for a
linear background ``b0 + b1 * (x - window midpoint)``. The whole fit is compiled
(numba), so thousands of fits per second leave the live chain's budget untouched.

Uncertainties are the square roots of the covariance diagonal ``(J^T W J)^-1``: with
the data's own 1-sigma errors as weights (Poisson errors of integrated patterns) they
are absolute; without errors the covariance is scaled by the reduced chi-square, as
``scipy.optimize.curve_fit`` does by default.

A fit is a success only when it is plausible (see :func:`fit_peak`): it moved from its
initial guess, its centre lies inside the window by at least half its FWHM, its FWHM
is positive and no wider than the window, its height stands out of its uncertainty
and its uncertainties are finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

#: Peak shapes and their numba codes.
MODELS = {"gaussian": 0, "pseudo-voigt": 1}
#: Backgrounds and their numbers of parameters.
BACKGROUNDS = {"constant": 1, "linear": 2}
FOUR_LN2 = 4.0 * math.log(2.0)
#: Area of a unit-height, unit-FWHM Gaussian and Lorentzian.
GAUSS_AREA = math.sqrt(math.pi / FOUR_LN2)
LORENTZ_AREA = math.pi / 2.0
MAX_ITERATIONS = 200
#: Smallest accepted height / its uncertainty: a 5-sigma detection. Real peaks of
#: integrated patterns stand at tens to thousands of sigma; the largest of 200 noise
#: points reaches about 3 sigma, so a fit onto noise rarely passes. The area is no
#: detection statistic: a pseudo-Voigt's Lorentzian fraction, poorly determined on a
#: weak peak, makes its area uncertain (area/sigma about 3 for a height at 7 sigma).
MIN_SIGNIFICANCE = 5.0
#: Relative change of a parameter below which a step is rounding, not a move.
ROUNDING = 1e-12
#: Status codes of the compiled fit.
OK, NOT_CONVERGED = 0, 1


@numba.njit(cache=True, nogil=True)
def _model_and_jacobian(x, p, model, n_bg, mid, f, jac):
    """Fill ``f`` with the model and ``jac`` with its derivatives at parameters ``p``."""
    c, w, h = p[0], p[1], p[2]
    k = 3
    eta = 0.0
    if model == 1:
        eta = p[3]
        k = 4
    b0 = p[k]
    b1 = p[k + 1] if n_bg == 2 else 0.0
    for i in range(x.size):
        u = (x[i] - c) / w
        g = math.exp(-FOUR_LN2 * u * u)
        dg_du = -2.0 * FOUR_LN2 * u * g
        shape = g
        dshape_du = dg_du
        lor = 0.0
        if model == 1:
            lor = 1.0 / (1.0 + 4.0 * u * u)
            dl_du = -8.0 * u * lor * lor
            shape = eta * lor + (1.0 - eta) * g
            dshape_du = eta * dl_du + (1.0 - eta) * dg_du
        f[i] = h * shape + b0 + b1 * (x[i] - mid)
        jac[i, 0] = h * dshape_du * (-1.0 / w)
        jac[i, 1] = h * dshape_du * (-u / w)
        jac[i, 2] = shape
        if model == 1:
            jac[i, 3] = h * (lor - g)
        jac[i, k] = 1.0
        if n_bg == 2:
            jac[i, k + 1] = x[i] - mid


@numba.njit(cache=True, nogil=True)
def _solve(a, b):
    """Solve the small symmetric system ``a z = b`` (Gaussian elimination with partial
    pivoting); returns (z, ok)."""
    n = b.size
    m = a.copy()
    z = b.copy()
    for col in range(n):
        piv = col
        for r in range(col + 1, n):
            if abs(m[r, col]) > abs(m[piv, col]):
                piv = r
        if m[piv, col] == 0.0 or not math.isfinite(m[piv, col]):
            return z, False
        if piv != col:
            for cc in range(n):
                m[col, cc], m[piv, cc] = m[piv, cc], m[col, cc]
            z[col], z[piv] = z[piv], z[col]
        for r in range(col + 1, n):
            factor = m[r, col] / m[col, col]
            for cc in range(col, n):
                m[r, cc] -= factor * m[col, cc]
            z[r] -= factor * z[col]
    for col in range(n - 1, -1, -1):
        s = z[col]
        for cc in range(col + 1, n):
            s -= m[col, cc] * z[cc]
        z[col] = s / m[col, col]
    return z, True


@numba.njit(cache=True, nogil=True)
def _chi2(x, y, wt, p, model, n_bg, mid, f, jac):
    _model_and_jacobian(x, p, model, n_bg, mid, f, jac)
    s = 0.0
    for i in range(x.size):
        r = y[i] - f[i]
        s += wt[i] * r * r
    return s


@numba.njit(cache=True, nogil=True)
def _moved(trial, p):
    """Whether any parameter of ``trial`` differs from ``p`` by more than rounding."""
    for a in range(p.size):
        if abs(trial[a] - p[a]) > ROUNDING * max(abs(trial[a]), abs(p[a])):
            return True
    return False


@numba.njit(cache=True, nogil=True)
def levenberg_marquardt(x, y, wt, p0, model, n_bg, mid):
    """Weighted least squares from ``p0``; returns (parameters, J^T W J, chi2, status,
    productive steps). A productive step lowers chi2 and moves a parameter by more
    than rounding: with none, the result is the initial guess (e.g. a non-finite chi2)."""
    n_par = p0.size
    p = p0.copy()
    f = np.empty(x.size)
    jac = np.empty((x.size, n_par))
    lam = 1e-3
    chi2 = _chi2(x, y, wt, p, model, n_bg, mid, f, jac)
    alpha = np.empty((n_par, n_par))
    beta = np.empty(n_par)
    status = NOT_CONVERGED
    steps = 0
    for _ in range(MAX_ITERATIONS):
        for a in range(n_par):
            beta[a] = 0.0
            for b in range(n_par):
                alpha[a, b] = 0.0
        for i in range(x.size):
            r = wt[i] * (y[i] - f[i])
            for a in range(n_par):
                beta[a] += jac[i, a] * r
                for b in range(a + 1):
                    alpha[a, b] += wt[i] * jac[i, a] * jac[i, b]
        for a in range(n_par):
            for b in range(a):
                alpha[b, a] = alpha[a, b]
        improved = False
        for _try in range(20):
            damped = alpha.copy()
            for a in range(n_par):
                damped[a, a] *= 1.0 + lam
            step, ok = _solve(damped, beta)
            if not ok:
                lam *= 10.0
                continue
            trial = p + step
            trial[1] = abs(trial[1])
            if model == 1:
                trial[3] = min(max(trial[3], 0.0), 1.0)
            f_try = np.empty(x.size)
            jac_try = np.empty((x.size, n_par))
            chi2_try = _chi2(x, y, wt, trial, model, n_bg, mid, f_try, jac_try)
            if math.isfinite(chi2_try) and chi2_try <= chi2:
                converged = chi2 - chi2_try <= 1e-8 * chi2 + 1e-14
                if chi2_try < chi2 and _moved(trial, p):
                    steps += 1
                p, f, jac, chi2 = trial, f_try, jac_try, chi2_try
                lam = max(lam / 10.0, 1e-12)
                improved = True
                if converged:
                    status = OK
                break
            lam *= 10.0
        if not improved:
            # no step lowers chi2: at the minimum (a singular curvature is caught when
            # the covariance is inverted)
            status = OK
            break
        if status == OK:
            break
    # curvature matrix at the solution (undamped)
    for a in range(n_par):
        for b in range(n_par):
            alpha[a, b] = 0.0
    for i in range(x.size):
        for a in range(n_par):
            for b in range(n_par):
                alpha[a, b] += wt[i] * jac[i, a] * jac[i, b]
    return p, alpha, chi2, status, steps


@dataclass(frozen=True)
class PeakResult:
    """One fitted peak; positions and widths in the pattern's radial unit.

    When ``success`` is False, ``reason`` says why and every number is NaN (never a
    valid-looking value).
    """

    centre: float
    centre_sigma: float
    fwhm: float
    fwhm_sigma: float
    height: float
    height_sigma: float
    area: float
    area_sigma: float
    background: float
    eta: float
    reduced_chi2: float
    points: int
    success: bool
    reason: str = ""

    @classmethod
    def failed(cls, reason: str, points: int = 0) -> PeakResult:
        nan = float("nan")
        return cls(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, points, False, reason)


def _initial(x, y, model, n_bg, mid):
    edge = max(2, len(x) // 10)
    left, right = np.median(y[:edge]), np.median(y[-edge:])
    base = min(left, right)
    i_max = int(np.argmax(y))
    height = y[i_max] - base
    above = np.nonzero(y - base >= 0.5 * height)[0]
    fwhm = max(x[above[-1]] - x[above[0]], abs(x[1] - x[0])) if above.size else (x[-1] - x[0]) / 5
    p = [x[i_max], fwhm, height] + ([0.5] if model == 1 else []) + [base]
    if n_bg == 2:
        p.append((right - left) / (x[-1] - x[0]))
    return np.array(p, dtype=np.float64), height


def _where(lo: float, hi: float) -> str:
    """``window LOW-HIGH`` (radial unit of the pattern), as the reasons name it."""
    return f"window {lo:.6g}-{hi:.6g}"


def _window_problem(lo: float, hi: float) -> str:
    """Why the window (radial unit of the pattern) cannot be fitted, or ``""``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{_where(lo, hi)} has a non-finite bound"
    if not lo < hi:
        return f"{_where(lo, hi)} is empty or reversed"
    return ""


def _too_few(x: np.ndarray, lo: float, hi: float, points: int, n_par: int) -> str:
    """Why ``points`` valid points are too few: the window misses the data's radial
    range (named), or the window holds too few of them."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return f"{points} valid points in {_where(lo, hi)}: the data has no finite radial value"
    first, last = float(finite.min()), float(finite.max())
    if hi < first or lo > last:
        return f"{_where(lo, hi)} does not overlap the data's radial range {first:.6g}-{last:.6g}"
    return f"{points} valid points in {_where(lo, hi)}: too few for {n_par} parameters"


def _implausible(lo: float, hi: float, centre: float, fwhm: float, height: float, err: np.ndarray,
                 area_sigma: float) -> str:
    """Why a converged fit is not a peak inside the window (radial unit of the
    pattern), or ``""``."""
    if not 0.0 < fwhm <= hi - lo:
        return f"fitted FWHM {fwhm:.4g} is not in (0, {hi - lo:.4g}], the width of {_where(lo, hi)}"
    if not lo <= centre <= hi:
        return f"fitted centre {centre:.6g} lies outside {_where(lo, hi)}"
    if not lo + 0.5 * fwhm <= centre <= hi - 0.5 * fwhm:
        return (f"fitted centre {centre:.6g} lies within half its FWHM {fwhm:.4g} of an edge of {_where(lo, hi)}: "
                "the window cuts the peak")
    if not height > 0.0:
        return f"fitted height {height:.4g} in {_where(lo, hi)} is not positive"
    if not np.isfinite(err).all():
        return f"singular fit in {_where(lo, hi)}: uncertainties {np.array2string(err, precision=3)} not finite"
    if not height >= MIN_SIGNIFICANCE * err[2]:
        return (f"no significant peak in {_where(lo, hi)}: height {height:.4g} +- {err[2]:.2g} "
                f"(< {MIN_SIGNIFICANCE:g} sigma)")
    if not math.isfinite(area_sigma):
        return f"singular fit in {_where(lo, hi)}: area uncertainty {area_sigma} not finite"
    return ""


def fit_peak(x: np.ndarray, y: np.ndarray, window: tuple[float, float], *, sigma: np.ndarray | None = None,
             model: str = "gaussian", background: str = "constant") -> PeakResult:
    """Fit one peak inside ``window``.

    A fit that is not plausible is a failed :class:`PeakResult` (never an exception, so
    that a live analysis goes on): its ``reason`` names the value at fault. Failed are a
    non-finite, empty or reversed window; a window that misses the data's radial range
    (named) or holds fewer than parameters + 3 valid points; no maximum above 3x the
    noise; a fit that did not converge or did not move from its initial guess; a FWHM
    not positive or wider than the window; a centre outside the window or within half
    a FWHM of its edge (the window cuts the peak's top half); a height not
    positive or below :data:`MIN_SIGNIFICANCE` sigma; undetermined (non-finite)
    uncertainties of the parameters or the area.

    Parameters
    ----------
    x, y : ndarray
        Pattern: radial position (any unit, e.g. deg 2theta or 1/nm) and intensity;
        NaN points are ignored.
    window : (float, float)
        Radial range (unit of ``x``) holding the peak and some background.
    sigma : ndarray, optional
        1-sigma errors of ``y`` (weights; absolute uncertainties).
    model : str
        ``"gaussian"`` or ``"pseudo-voigt"``.
    background : str
        ``"constant"`` or ``"linear"``.
    """
    if model not in MODELS:
        raise ValueError(f"unknown peak model {model!r}; use one of {sorted(MODELS)}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; use one of {sorted(BACKGROUNDS)}")
    lo, hi = window
    refused = _window_problem(lo, hi)
    if refused:
        return PeakResult.failed(refused)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    sel = (x >= lo) & (x <= hi) & np.isfinite(y) & np.isfinite(x)
    if sigma is not None:
        sigma = np.asarray(sigma, np.float64)
        sel &= np.isfinite(sigma) & (sigma > 0)
    code, n_bg = MODELS[model], BACKGROUNDS[background]
    n_par = 3 + (code == 1) + n_bg
    points = int(sel.sum())
    if points < n_par + 3:
        return PeakResult.failed(_too_few(x, lo, hi, points, n_par), points)
    xs, ys = x[sel], y[sel]
    wt = np.ones(points) if sigma is None else 1.0 / sigma[sel] ** 2
    mid = 0.5 * (lo + hi)
    p0, height0 = _initial(xs, ys, code, n_bg, mid)
    noise = float(np.sqrt(np.median(1.0 / wt))) if sigma is not None else float(np.std(np.diff(ys))) / math.sqrt(2)
    if not height0 > 3.0 * noise:
        return PeakResult.failed(f"no peak in {_where(lo, hi)}: maximum {height0:.4g} above background "
                                 f"is below 3x the noise {noise:.4g}", points)
    p, alpha, chi2, status, steps = levenberg_marquardt(xs, ys, wt, p0, code, n_bg, mid)
    if status != OK:
        return PeakResult.failed(f"fit did not converge in {_where(lo, hi)}", points)
    if steps == 0:
        return PeakResult.failed(f"fit in {_where(lo, hi)} did not move from its initial guess (centre {p0[0]:.6g}, "
                                 f"FWHM {p0[1]:.4g}, height {p0[2]:.4g}; chi2 {chi2:.4g})", points)
    try:
        cov = np.linalg.inv(alpha)
    except np.linalg.LinAlgError:
        return PeakResult.failed(f"singular fit in {_where(lo, hi)} (parameters not determined)", points)
    dof = points - n_par
    red = chi2 / dof
    if sigma is None:
        cov = cov * red
    with np.errstate(invalid="ignore"):
        err = np.sqrt(np.diag(cov))
    centre, fwhm, height = float(p[0]), float(p[1]), float(p[2])
    eta = float(p[3]) if code == 1 else 0.0
    unit_area = eta * LORENTZ_AREA + (1 - eta) * GAUSS_AREA
    area = height * fwhm * unit_area
    # area = h w k(eta): propagate through the covariance of (w, h[, eta])
    grad = np.zeros(n_par)
    grad[1], grad[2] = height * unit_area, fwhm * unit_area
    if code == 1:
        grad[3] = height * fwhm * (LORENTZ_AREA - GAUSS_AREA)
    with np.errstate(invalid="ignore", over="ignore"):
        area_sigma = float(np.sqrt(grad @ cov @ grad))
    reason = _implausible(lo, hi, centre, fwhm, height, err, area_sigma)
    if reason:
        return PeakResult.failed(reason, points)
    return PeakResult(centre, float(err[0]), fwhm, float(err[1]), height, float(err[2]), area, area_sigma,
                      float(p[3 + (code == 1)]), eta, float(red), points, True)


@dataclass(frozen=True)
class LatticeStrain:
    """d-spacing (A) of a fitted peak and its strain against a reference d0, with 1-sigma errors."""

    d_A: float
    d_sigma_A: float
    strain: float
    strain_sigma: float


def lattice_strain(peak: PeakResult, wavelength_m: float, d0_A: float, unit: str = "2th_deg", *,
                   d0_sigma_A: float = 0.0) -> LatticeStrain:
    """d = lambda / (2 sin theta) (or 2 pi / q) of ``peak`` and strain ``d / d0 - 1``.

    Parameters
    ----------
    peak : PeakResult
        Fit on a pattern in ``unit``.
    wavelength_m : float
        X-ray wavelength (m).
    d0_A : float
        Unstrained d-spacing (A).
    unit : str
        ``"2th_deg"`` (deg), ``"q_nm^-1"`` (1/nm) or ``"q_A^-1"`` (1/A).
    d0_sigma_A : float
        1-sigma error of ``d0_A`` (A), e.g. from a reference run's fits; propagated.
    """
    if not peak.success:
        nan = float("nan")
        return LatticeStrain(nan, nan, nan, nan)
    if unit == "2th_deg":
        theta = math.radians(peak.centre) / 2
        d = wavelength_m * 1e10 / (2 * math.sin(theta))
        d_sigma = d / math.tan(theta) * math.radians(peak.centre_sigma) / 2
    elif unit in ("q_nm^-1", "q_A^-1"):
        scale = 10.0 if unit == "q_nm^-1" else 1.0
        d = 2 * math.pi / peak.centre * scale
        d_sigma = d * peak.centre_sigma / peak.centre
    else:
        raise ValueError(f"unknown radial unit {unit!r}")
    return LatticeStrain(d, d_sigma, d / d0_A - 1, math.hypot(d_sigma, d * d0_sigma_A / d0_A) / d0_A)


@dataclass(frozen=True)
class PeakPosition:
    """A fitted peak's centre (with 1-sigma error) and FWHM in both 2theta (deg) and
    q (1/nm); NaN for a failed fit."""

    centre_2theta_deg: float
    centre_2theta_sigma_deg: float
    fwhm_2theta_deg: float
    centre_q_nm: float
    centre_q_sigma_nm: float
    fwhm_q_nm: float


def peak_position(peak: PeakResult, unit: str, wavelength_m: float) -> PeakPosition:
    """Centre and FWHM of ``peak`` (fitted in ``unit``: ``"2th_deg"`` or
    ``"q_nm^-1"``) in both units; errors and widths through dq/d2theta at the centre.

    Parameters
    ----------
    peak : PeakResult
        The fit.
    unit : str
        Radial unit of the fitted pattern.
    wavelength_m : float
        X-ray wavelength (m).
    """
    k = 2 * math.pi / (wavelength_m * 1e9)  # 1/nm
    if unit == "2th_deg":
        theta = math.radians(peak.centre) / 2
        q = 2 * k * math.sin(theta)
    elif unit == "q_nm^-1":
        q = peak.centre
        theta = math.asin(min(q / (2 * k), 1.0)) if math.isfinite(q) else float("nan")
    else:
        raise ValueError(f"unknown radial unit {unit!r}")
    dq_dtth = k * math.cos(theta) * math.pi / 180  # 1/nm per deg
    if unit == "2th_deg":
        return PeakPosition(peak.centre, peak.centre_sigma, peak.fwhm, q, peak.centre_sigma * dq_dtth,
                            peak.fwhm * dq_dtth)
    return PeakPosition(math.degrees(2 * theta), peak.centre_sigma / dq_dtth, peak.fwhm / dq_dtth, q,
                        peak.centre_sigma, peak.fwhm)
