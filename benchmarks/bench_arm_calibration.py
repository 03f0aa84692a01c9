"""Benchmark: automatic calibration of a Pilatus 300K-W on a vertical 2theta arm from
LaB6 frames at 50 arm angles (5-39 deg, 0.9 m).

Renders the frames with the simulator (not timed), then times ``calibrate_arm`` from a
nominal guess 3 mm / 1 mm off in the PONI, 1 % in distance, 0.3 deg in offset, without
tilt and with scale 1. Prints ``name: value`` lines: the time (s), the positions, the
frames used, and the worst errors against the true model over every arm angle: of the
2theta of the pixels (deg, and in pixels of PONI shift at the distance; the model's
offset/poni1 and rot1/poni2 are nearly degenerate, see the position models), of the
distance (%) and of the arm's rotation over the scan from the scale (deg).

Run: ``python benchmarks/bench_arm_calibration.py``
"""

from __future__ import annotations

import math
import time

import numpy as np

from xrd_bluesky.science.calibration.arm import ArmFrame, calibrate_arm
from xrd_bluesky.science.calibration.position_models import (
    ArmModel,
    ArmPosition,
)
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library

DET, WL, PIXEL_M = "Pilatus300kw", 0.8856e-10, 172e-6
TRUTH = ArmModel(Poni(0.9, 97.3 * PIXEL_M, 930 * PIXEL_M, rot1=math.radians(0.15), wavelength=WL, detector=DET),
                 offset_deg=0.3, scale=1.0005)
GUESS = ArmModel(Poni(0.909, 97 * PIXEL_M + 1e-3, 930 * PIXEL_M + 3e-3, wavelength=WL, detector=DET))
ANGLES = np.linspace(5.0, 39.0, 50)


def render() -> list[ArmFrame]:
    response = DetectorResponse.simulate(DET, 1)
    rng = np.random.default_rng(0)
    frames = []
    for k, angle in enumerate(ANGLES):
        photons = expected_photons(default_library()["LaB6"], TRUTH.poni_at(ArmPosition(angle)), flux_ph_s=1e11,
                                   exposure_s=1.0, beamstop=None)
        image = detect(photons, response, 1.0, rng).astype(np.float64)
        frames.append(ArmFrame(f"a{k:02d}", ArmPosition(float(angle)),
                               np.where(image >= 0, image - response.dark_rate(), -1.0)))
    return frames


def main() -> None:
    frames = render()
    t0 = time.perf_counter()
    result = calibrate_arm(frames, GUESS, "LaB6")
    elapsed = time.perf_counter() - t0
    model = result.model
    worst_deg = max(float(np.max(np.abs(model.poni_at(ArmPosition(a)).integrator().center_array(unit="2th_deg")
                                        - TRUTH.poni_at(ArmPosition(a)).integrator().center_array(unit="2th_deg"))))
                    for a in ANGLES)
    print(f"arm_calibration_s: {elapsed:.2f}")
    print(f"positions: {len(frames)}")
    print(f"used: {len(result.used)}")
    print(f"skipped: {len(result.skipped)}")
    print(f"control_points: {result.points}")
    print(f"residual_deg: {result.residual_deg:.5f}")
    print(f"worst_two_theta_error_deg: {worst_deg:.5f}")
    print(f"worst_two_theta_error_px: {math.radians(worst_deg) * TRUTH.reference.dist / PIXEL_M:.4f}")
    print(f"distance_error_percent: {abs(model.reference.dist / TRUTH.reference.dist - 1) * 100:.5f}")
    print(f"scan_rotation_error_deg: {abs(model.scale - TRUTH.scale) * (ANGLES[-1] - ANGLES[0]):.5f}")


if __name__ == "__main__":
    main()
