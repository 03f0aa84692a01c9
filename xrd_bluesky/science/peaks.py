"""Peak fitting on 1D patterns: a Gaussian on a linear background."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class PeakFit:
    """Result of a single-peak fit; positions and widths in the pattern's radial unit.

    ``success`` is False with a ``reason`` when the fit failed; the numbers are then NaN.
    """

    centre: float
    centre_sigma: float
    fwhm: float
    amplitude: float
    background: float
    success: bool
    reason: str = ""


def _gaussian_linear(x, centre, sigma, amplitude, b0, b1):
    return amplitude * np.exp(-0.5 * ((x - centre) / sigma) ** 2) + b0 + b1 * (x - centre)


def _failed(reason: str) -> PeakFit:
    nan = float("nan")
    return PeakFit(nan, nan, nan, nan, nan, False, reason)


def fit_gaussian(x: np.ndarray, y: np.ndarray, window: tuple[float, float],
                 sigma_y: np.ndarray | None = None) -> PeakFit:
    """Fit one Gaussian plus linear background to the points of ``x`` inside ``window``.

    Parameters
    ----------
    x, y : ndarray
        Pattern (radial position in any unit, intensity); NaN points are ignored.
    window : (float, float)
        Radial range (same unit as ``x``) that contains the peak.
    sigma_y : ndarray, optional
        1-sigma errors of ``y``, used as weights.
    """
    lo, hi = window
    sel = (x >= lo) & (x <= hi) & np.isfinite(y)
    if sigma_y is not None:
        sel &= np.isfinite(sigma_y) & (sigma_y > 0)
    if sel.sum() < 6:
        return _failed(f"fewer than 6 valid points in window {lo:.4g}-{hi:.4g}")
    xs, ys = x[sel], y[sel]
    ws = None if sigma_y is None else sigma_y[sel]
    base = np.median(np.concatenate([ys[:3], ys[-3:]]))
    i_max = int(np.argmax(ys))
    amp0 = ys[i_max] - base
    if amp0 <= 0:
        return _failed(f"no peak above background in window {lo:.4g}-{hi:.4g}")
    p0 = [xs[i_max], (hi - lo) / 10, amp0, base, 0.0]
    try:
        popt, pcov = curve_fit(_gaussian_linear, xs, ys, p0=p0, sigma=ws,
                               absolute_sigma=ws is not None, maxfev=2000)
    except (RuntimeError, ValueError) as exc:
        return _failed(f"fit did not converge in window {lo:.4g}-{hi:.4g}: {exc}")
    centre, sig, amp = popt[0], abs(popt[1]), popt[2]
    err = float(np.sqrt(pcov[0, 0])) if np.isfinite(pcov[0, 0]) else float("nan")
    if not (lo <= centre <= hi) or amp <= 0 or not np.isfinite(err):
        return _failed(f"fit left window {lo:.4g}-{hi:.4g} or has no valid covariance")
    return PeakFit(float(centre), err, float(sig * FWHM_PER_SIGMA), float(amp), float(popt[3]), True)
