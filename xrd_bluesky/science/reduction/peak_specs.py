"""Which peaks to fit: reflections of a named phase, d-spacing windows, or found
automatically in a pattern.

A peak is specified by a 2theta window (deg) and, when known, its unstrained
d-spacing d0 (A). The configuration is a plain dict (it travels in a run's start
document under ``peaks``)::

    {"phase": "Mg", "hkl": [[1, 0, 0], [0, 0, 2], [1, 0, 1]],   # reflections of a phase
     "d_windows_A": [[2.40, 2.50]],                             # and/or d-spacing windows
     "auto": 4,                                                 # or the 4 strongest peaks
     "half_width_deg": 0.25, "model": "pseudo-voigt", "background": "linear",
     "d0_A": {"Mg_101": 2.4530}, "d0_uid": "<raw uid of an unloaded reference run>",
     "loading_azimuth_deg": 0.0}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks, peak_widths

from ...errors import MissingMetadataError
from ..crystal import Crystal, ceo2, lab6, magnesium
from ..units import two_theta_rad
from .peak_fitting import BACKGROUNDS, MODELS

#: Phases whose reflections can be named by hkl.
PHASES: dict[str, Callable[[], Crystal]] = {"CeO2": ceo2, "LaB6": lab6, "Mg": magnesium}
#: Keys a ``peaks`` configuration may have.
CONFIG_KEYS = {"phase", "hkl", "d_windows_A", "auto", "half_width_deg", "model", "background",
               "d0_A", "d0_uid", "loading_azimuth_deg"}
#: Default half width (deg 2theta) of the window around a reflection's position.
HALF_WIDTH_DEG = 0.25
#: Minimum prominence of an automatically found peak, in units of the pattern's median sigma.
AUTO_MIN_PROMINENCE = 20.0


@dataclass(frozen=True)
class PeakSpec:
    """One peak to fit: its label, 2theta window (deg) and unstrained d-spacing d0 (A)
    when known (a reflection of a named phase, or given)."""

    label: str
    window_deg: tuple[float, float]
    d0_A: float | None = None


def check_config(config: dict) -> None:
    """Raise :class:`MissingMetadataError` naming the first unusable entry of a
    ``peaks`` configuration."""
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise MissingMetadataError(f"unknown keys {sorted(unknown)} in the peaks configuration; "
                                   f"known: {sorted(CONFIG_KEYS)}")
    if not any(k in config for k in ("hkl", "d_windows_A", "auto")):
        raise MissingMetadataError("the peaks configuration names no peaks: give 'hkl' (with 'phase'), "
                                   "'d_windows_A' or 'auto'")
    if "hkl" in config and config.get("phase") not in PHASES:
        raise MissingMetadataError(f"peaks by hkl need a known 'phase', got {config.get('phase')!r}; "
                                   f"known: {sorted(PHASES)}")
    if config.get("model", "gaussian") not in MODELS:
        raise MissingMetadataError(f"unknown peak model {config['model']!r}; use one of {sorted(MODELS)}")
    if config.get("background", "constant") not in BACKGROUNDS:
        raise MissingMetadataError(f"unknown background {config['background']!r}; use one of {sorted(BACKGROUNDS)}")
    for lo, hi in config.get("d_windows_A", []):
        if not 0 < lo < hi:
            raise MissingMetadataError(f"d-spacing window {lo}-{hi} A is empty or not positive")


def hkl_label(phase: str, hkl) -> str:
    """Label of a reflection, e.g. ``Mg_101``; negative indices as ``m1``."""
    return f"{phase}_" + "".join(f"m{-h}" if h < 0 else str(h) for h in hkl)


def configured_specs(config: dict, wavelength_m: float) -> list[PeakSpec]:
    """The peaks a configuration names by hkl or d-spacing window, sorted by 2theta.

    Parameters
    ----------
    config : dict
        The ``peaks`` configuration (see the module docstring).
    wavelength_m : float
        X-ray wavelength (m).
    """
    check_config(config)
    half = float(config.get("half_width_deg", HALF_WIDTH_DEG))
    given = config.get("d0_A", {})
    specs = []
    if "hkl" in config:
        crystal = PHASES[config["phase"]]()
        gstar = crystal.reciprocal_metric()
        for hkl in config["hkl"]:
            h = np.asarray(hkl, dtype=float)
            if not h.any():
                raise MissingMetadataError("hkl (0, 0, 0) is not a reflection")
            d = 1.0 / math.sqrt(float(h @ gstar @ h))
            tth = math.degrees(float(two_theta_rad(d, wavelength_m)))
            if math.isnan(tth):
                raise MissingMetadataError(f"reflection {hkl} of {config['phase']} (d = {d:.4f} A) is beyond "
                                           f"2theta = 180 deg at {wavelength_m * 1e10:.4f} A")
            label = hkl_label(config["phase"], hkl)
            specs.append(PeakSpec(label, (tth - half, tth + half), given.get(label, d)))
    for i, (lo, hi) in enumerate(config.get("d_windows_A", [])):
        tth_hi, tth_lo = (math.degrees(float(two_theta_rad(d, wavelength_m))) for d in (lo, hi))
        if math.isnan(tth_hi):
            raise MissingMetadataError(f"d-spacing window {lo}-{hi} A is unreachable at {wavelength_m * 1e10:.4f} A")
        label = f"d_window{i}"
        specs.append(PeakSpec(label, (tth_lo, tth_hi), given.get(label)))
    return sorted(specs, key=lambda s: s.window_deg[0])


def find_peak_specs(two_theta_deg: np.ndarray, intensity: np.ndarray, sigma: np.ndarray, count: int, *,
                    min_prominence: float = AUTO_MIN_PROMINENCE, given_d0: dict | None = None) -> list[PeakSpec]:
    """The ``count`` most prominent peaks of a pattern, as windows of +-3 FWHM (cut
    half way to a neighbour), labelled ``peak0``, ``peak1``... by increasing 2theta.

    Parameters
    ----------
    two_theta_deg, intensity, sigma : ndarray
        The pattern: 2theta (deg), intensity and its 1-sigma error (any one unit);
        NaN bins are ignored.
    count : int
        How many peaks at most.
    min_prominence : float
        A peak must stand out of its surroundings by this many median sigmas.
    given_d0 : dict, optional
        d0 (A) by label, for peaks whose reference d-spacing is known.
    """
    good = np.isfinite(intensity) & np.isfinite(sigma)
    x, y = np.asarray(two_theta_deg)[good], np.asarray(intensity)[good]
    if x.size < 10:
        return []
    noise = float(np.median(np.asarray(sigma)[good]))
    index, props = find_peaks(y, prominence=min_prominence * noise)
    strongest = np.sort(index[np.argsort(props["prominences"])[::-1][:count]])
    widths = peak_widths(y, strongest, rel_height=0.5)[0] * np.median(np.diff(x))
    found = x[index]
    specs = []
    for i, (c, w) in enumerate(zip(x[strongest], widths)):
        lower, upper = found[found < c], found[found > c]
        lo = max(c - 3 * w, 0.5 * (c + lower[-1])) if lower.size else c - 3 * w
        hi = min(c + 3 * w, 0.5 * (c + upper[0])) if upper.size else c + 3 * w
        label = f"peak{i}"
        specs.append(PeakSpec(label, (float(lo), float(hi)), (given_d0 or {}).get(label)))
    return specs


@dataclass(frozen=True)
class PeakReference:
    """Unstrained d-spacings measured in a reference run (e.g. the unloaded specimen).

    ``d0_A`` maps a peak label to (d0, 1-sigma) in A from the 1D fits; ``sector_d0_A``
    to per-sector arrays (d0, 1-sigma) in A from the cake fits, when it has them.
    """

    uid: str
    d0_A: dict[str, tuple[float, float]]
    sector_d0_A: dict[str, tuple[np.ndarray, np.ndarray]]


def weighted_mean(values: np.ndarray, sigmas: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted mean along ``axis`` and its 1-sigma error; NaN entries
    are left out (NaN where none is left)."""
    values, sigmas = np.asarray(values, float), np.asarray(sigmas, float)
    weights = np.where(np.isfinite(values) & np.isfinite(sigmas) & (sigmas > 0), 1.0 / sigmas**2, 0.0)
    total = weights.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(total > 0, np.nansum(np.where(weights > 0, values, 0.0) * weights, axis=axis) / total, np.nan)
        return mean, np.where(total > 0, 1.0 / np.sqrt(total), np.nan)
