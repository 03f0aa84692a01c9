"""Benchmark: automatic calibration of 5 Pilatus 2M CdTe positions.

Renders a CeO2 frame at five detector-stage positions of the simulated beamline
(rendering is not timed), then times, in this one process:

- ours: ``refine_position`` at each position (coarse alignment, progressive ring
  schedule, outlier rejection) and the detector-position model fit;
- plain pyFAI: ``SingleGeometry.extract_cp`` + ``GeometryRefinement.refine3`` from the
  same guesses, three rounds, no coarse alignment.

Prints ``name: value`` lines: times (s), their ratio and the worst errors against the
true geometry (beam centre in px, distance in %, tilts in deg).

Run: ``python benchmarks/bench_calibration.py``
"""

from __future__ import annotations

import contextlib
import io
import math
import time

import numpy as np
import pyFAI.calibrant
from pyFAI.goniometer import SingleGeometry

from xrd_bluesky.plans.calibration import DEFAULT_CALIBRATION_POSITIONS
from xrd_bluesky.science.calibration.refinement import (
    fit_position_model,
    refine_position,
)
from xrd_bluesky.science.detector_pixels import pixel_geometry
from xrd_bluesky.science.geometry import Poni, StagePosition
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.sim_devices.beamline import BeamlineConfig


def errors(found: Poni, true: Poni) -> tuple[float, float, float]:
    centre = float(np.max(np.abs(np.array(found.beam_centre_px()) - np.array(true.beam_centre_px()))))
    dist = abs(found.dist - true.dist) / true.dist * 100
    tilt = max(abs(math.degrees(found.rot1 - true.rot1)), abs(math.degrees(found.rot2 - true.rot2)))
    return centre, dist, tilt


def plain_pyfai(image: np.ndarray, guess: Poni, mask: np.ndarray) -> Poni:
    cal = pyFAI.calibrant.get_calibrant("CeO2")
    cal.wavelength = guess.wavelength
    det = guess.detector_model().__class__()
    det.mask = (det.mask.astype(bool) | mask | (image < 0)).astype(np.int8)
    sg = SingleGeometry("plain", image.astype(np.float32), calibrant=cal, detector=det, geometry=guess.integrator())
    for _ in range(3):
        sg.extract_cp(pts_per_deg=1.0)
        sg.geometry_refinement.refine3(fix=["wavelength", "rot3"])
    return Poni.from_integrator(sg.get_ai())


def main() -> None:
    config = BeamlineConfig(detector="Pilatus2MCdTe")
    truth, nominal = config.true_geometry(), config.nominal_geometry()
    response = DetectorResponse.simulate(config.detector, 1)
    rng = np.random.default_rng(0)
    positions = [StagePosition(*p) for p in DEFAULT_CALIBRATION_POSITIONS]
    frames = []
    for pos in positions:
        photons = expected_photons(default_library()["CeO2"], truth.poni_at(pos), flux_ph_s=1e11,
                                   exposure_s=1.0, beamstop=config.beamstop)
        frames.append(detect(photons, response, 1.0, rng).astype(np.float64))
    masks = [config.beamstop.shadow(pixel_geometry(nominal.poni_at(p)), margin_mm=2.0) for p in positions]
    pixel_geometry.cache_clear()

    t0 = time.perf_counter()
    ours = [refine_position(f, nominal.poni_at(p), "CeO2", mask=m, position=p, label=f"p{i}")
            for i, (f, p, m) in enumerate(zip(frames, positions, masks))]
    with contextlib.redirect_stdout(io.StringIO()):
        model, rms = fit_position_model(ours, nominal, "CeO2")
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    plain = [plain_pyfai(f, nominal.poni_at(p), m) for f, p, m in zip(frames, positions, masks)]
    t_plain = time.perf_counter() - t0

    worst = lambda ponis: np.max([errors(a, truth.poni_at(p)) for a, p in zip(ponis, positions)], axis=0)  # noqa: E731
    ours_err = worst([c.poni for c in ours])
    model_err = worst([model.poni_at(p) for p in positions])
    plain_err = worst(plain)
    print("positions: 5")
    print("detector: Pilatus2MCdTe (1679 x 1475)")
    print(f"calibration_time_s: {t_ours:.2f}")
    print(f"plain_pyfai_time_s: {t_plain:.2f}")
    print(f"time_ratio_ours_over_plain: {t_ours / t_plain:.2f}")
    print(f"model_residual_deg: {rms:.5f}")
    for name, err in (("ours", ours_err), ("model", model_err), ("plain_pyfai", plain_err)):
        print(f"{name}_worst_centre_error_px: {err[0]:.4f}")
        print(f"{name}_worst_distance_error_percent: {err[1]:.5f}")
        print(f"{name}_worst_tilt_error_deg: {err[2]:.5f}")
    real_guess_far_off()


def real_guess_far_off() -> None:
    """Why the extra time: Dioptas' real CeO2 frame from a guess 5 mm and 20 px off."""
    from pathlib import Path

    import fabio

    folder = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "dioptas_ceo2"
    if not folder.exists():
        print("real_ceo2: skipped (../shared/realdata absent)")
        return
    image = fabio.open(folder / "CeO2_Pilatus1M.tif").data.astype(np.float64)
    ref = Poni.read(folder / "CeO2_Pilatus1M_rawarray.poni")
    f = ref.fit2d()
    guess = Poni.from_fit2d(f["directDist"] + 5.0, f["centerX"] + 20.0, f["centerY"], wavelength=ref.wavelength,
                            detector=ref.detector, detector_config=ref.detector_config)
    ours = refine_position(image, guess, "CeO2").poni
    cal = pyFAI.calibrant.get_calibrant("CeO2")
    cal.wavelength = ref.wavelength
    sg = SingleGeometry("plain", image.astype(np.float32), calibrant=cal,
                        detector=guess.detector_model(), geometry=guess.integrator())
    for _ in range(3):
        sg.extract_cp(pts_per_deg=1.0)
        sg.geometry_refinement.refine3(fix=["wavelength", "rot3"])
    plain = Poni.from_integrator(sg.get_ai())
    for name, poni in (("ours", ours), ("plain_pyfai", plain)):
        g = poni.fit2d()
        centre_error_px = math.hypot(g["centerX"] - f["centerX"], g["centerY"] - f["centerY"])
        distance_error_percent = abs(g["directDist"] - f["directDist"]) / f["directDist"] * 100
        print(f"real_ceo2_{name}_centre_error_px: {centre_error_px:.3f}")
        print(f"real_ceo2_{name}_distance_error_percent: {distance_error_percent:.4f}")


if __name__ == "__main__":
    main()
