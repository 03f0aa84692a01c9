"""A simulated gain-map measurement with its ground truth, for tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..detector_pixels import Beamstop, module_slices, pixel_geometry
from ..gain_map.method import PositionData
from ..geometry import DetectorPositionModel, StagePosition
from ..reduction.integration import invalid_pixels
from .image_formation import DetectorResponse, detect, expected_photons
from .library import default_library

#: Stage positions (mm) whose beamstop shadows do not overlap on the default geometry.
GAIN_POSITIONS = ((0.0, 0.0, 300.0), (0.0, 12.0, 300.0), (0.0, -12.0, 300.0), (15.0, 6.0, 300.0),
                  (-15.0, -6.0, 300.0))


@dataclass
class GainMapSet:
    """Per-position mean frames, the mean dark, the detector's truth and the true
    photons per pixel summed over all unshadowed exposures; with ``keep_frames``, the
    recorded frames (int32 counts): one stack per position and the dark stack."""

    positions: list[PositionData]
    dark: np.ndarray
    response: DetectorResponse
    photons: np.ndarray
    frames: list[np.ndarray] | None = None
    dark_frames: np.ndarray | None = None


def simulate_gain_map_set(geometry: DetectorPositionModel, beamstop: Beamstop, *, detector: str,
                          positions=GAIN_POSITIONS, frames: int = 10, photons_per_pixel: float = 1e4,
                          seed: int = 3, keep_frames: bool = False) -> GainMapSet:
    """Glass slides at ``positions`` (mm), ``frames`` frames each, scaled so that a
    typical pixel collects ``photons_per_pixel`` photons in total; true gain with 3 %
    pixel RMS, 1 % module steps, 20 damaged and 10 dead pixels. ``keep_frames`` keeps
    the recorded frames (to write them to files)."""
    response = DetectorResponse.simulate(detector, seed, pixel_rms=0.03, module_rms=0.01, n_dead=10, n_damaged=20)
    rng = np.random.default_rng(seed)
    glass = default_library()["glass"]
    ponis = [geometry.poni_at(StagePosition(*p)) for p in positions]
    per_photon = [expected_photons(glass, poni, flux_ph_s=1.0, exposure_s=1.0, beamstop=beamstop) for poni in ponis]
    flux_time = photons_per_pixel / (len(positions) * frames) / np.mean([np.median(e[e > 0]) for e in per_photon])
    dark_stack = np.stack([detect(np.zeros(response.shape, np.float32), response, 1.0, rng) for _ in range(frames)])
    dark = dark_stack.mean(axis=0)
    data, stacks, photons = [], [], np.zeros(response.shape)
    for i, (poni, e) in enumerate(zip(ponis, per_photon)):
        lam = e * np.float32(flux_time)
        stack = np.stack([detect(lam, response, 1.0, rng) for _ in range(frames)])
        shadow = beamstop.shadow(pixel_geometry(poni), margin_mm=0.5)
        mask = invalid_pixels(stack.min(axis=0), poni, static_mask=shadow) | (stack.max(axis=0) >= response.max_count)
        data.append(PositionData(f"position {i}", stack.mean(axis=0, dtype=np.float64) - dark, frames, poni, mask))
        photons += np.where(shadow, 0.0, lam * frames)
        if keep_frames:
            stacks.append(stack)
    return GainMapSet(data, dark, response, photons, *((stacks, dark_stack) if keep_frames else (None, None)))


@dataclass(frozen=True)
class GainMapScore:
    """How a gain map compares with the truth."""

    rms_error: float
    poisson_limit: float
    worst_module_bias: float
    damaged_found: int
    dead_found: int
    false_flags: int
    normal_pixels: int

    @property
    def rms_over_poisson(self) -> float:
        return self.rms_error / self.poisson_limit


def score_gain_map(gain: np.ndarray, bad: np.ndarray, truth: GainMapSet) -> GainMapScore:
    """Compare ``gain``/``bad`` with the truth; both normalised on the normal pixels.

    The Poisson limit: counts = gain x Poisson(photons), so the best estimate of a
    pixel's gain has sigma = gain / sqrt(photons).
    """
    response, photons = truth.response, truth.photons
    true_gain = response.gain.astype(np.float64)
    normal = ~(response.gaps | response.dead | response.damaged | response.hot) & (photons > 0)
    ok = normal & np.isfinite(gain) & (gain > 0)
    scale = np.median(gain[ok] / true_gain[ok])
    rms = float(np.sqrt(np.mean((gain[ok] / scale - true_gain[ok]) ** 2)))
    poisson = float(np.sqrt(np.mean(true_gain[ok] ** 2 / photons[ok])))
    from ..geometry import detector_model

    biases = [float(np.mean(gain[r, c][ok[r, c]] / scale / true_gain[r, c][ok[r, c]]) - 1)
              for r, c in module_slices(detector_model(response.detector)) if ok[r, c].sum() > 1000]
    flagged = bad & ~response.gaps
    return GainMapScore(rms, poisson, max(abs(b) for b in biases), int((flagged & response.damaged).sum()),
                        int((flagged & response.dead).sum()), int((flagged & normal).sum()), int(normal.sum()))
