"""Real data: LaB6 on the 2theta arm of SSRL BL 7-2 (Pilatus 300K-W, 51 frames, 5-39
deg; ../shared/realdata/ssrl_arm). The arm is calibrated automatically from every other
frame and its arm reading alone, then all 51 frames (25 of them at angles the
calibration never saw) are stitched into one 2theta pattern whose LaB6 peaks must sit at
their 2theta at the beam's wavelength."""

from __future__ import annotations

import csv

import fabio
import numpy as np
import pyFAI.calibrant
from conftest import realdata

from xrd_bluesky.science.calibration.arm import ArmFrame, calibrate_arm
from xrd_bluesky.science.calibration.position_models import (
    ArmModel,
    ArmPosition,
)
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction.corrected_integration import CorrectedIntegrator
from xrd_bluesky.science.reduction.multi_geometry import covered_radial_range, stitch
from xrd_bluesky.science.reduction.peak_fitting import fit_peak

WAVELENGTH_M = 0.885601e-10
PIXEL_M = 172e-6
#: What a scientist knows before any calibration: the arm rotates vertically (rings move
#: along the 195 rows) and its reading is 2theta (offset 0, scale 1); the distance is
#: about 0.9 m; the beam passes about half-way up the detector (row 97.5) and, from the
#: apex of the arcs, near column 930 (taken 20 px off, at 950); no tilt.
GUESS = ArmModel(Poni(0.9, 97.5 * PIXEL_M, 950 * PIXEL_M, wavelength=WAVELENGTH_M, detector="Pilatus300kw"))
#: Bins of the stitched pattern (deg): a tenth of the peaks' ~0.025 deg FWHM.
BIN_DEG = 0.002
#: Half-width of the window fitted around each peak (deg): the peak and its background.
WINDOW_DEG = 0.15
#: A peak's centre within 0.005 deg (a quarter of its FWHM, ~0.5 px at 0.92 m) of LaB6's.
TOLERANCE_DEG = 0.005


def test_calibrate_and_stitch_ssrl_arm():
    folder = realdata("ssrl_arm")
    with open(folder / "positions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    frames = [ArmFrame(r["file"], ArmPosition(float(r["tth_deg"])), fabio.open(folder / r["file"]).data.astype(float))
              for r in rows]
    assert len(frames) == 51
    result = calibrate_arm(frames[::2], GUESS, "LaB6")
    model = result.model
    print(f"\ncalibrated: {model}\nresidual {result.residual_deg:.5f} deg, {len(result.used)} frames used, "
          f"{result.points} points; skipped: {sorted(result.skipped)}")
    assert abs(model.reference.dist - 0.92) < 0.02  # PROVENANCE: about 0.92 m
    assert all("no ring" in reason or "control points" in reason for reason in result.skipped.values())

    ponis = [model.poni_at(f.position) for f in frames]
    low, high = covered_radial_range(ponis, "2th_deg")
    npt = int(round((high - low) / BIN_DEG))
    pattern = stitch(CorrectedIntegrator(p, npt=npt, unit="2th_deg", radial_range=(low, high)).sums(f.image, f.label)
                     for p, f in zip(ponis, frames)).result()
    cal = pyFAI.calibrant.get_calibrant("LaB6")
    cal.wavelength = WAVELENGTH_M
    expected = [t for t in np.degrees(cal.get_2th()) if low + 2 * WINDOW_DEG < t < high - 2 * WINDOW_DEG]
    assert len(expected) >= 9  # 100 ... 300/221 and 310
    deviations = {}
    for tth in expected:
        peak = fit_peak(pattern.radial, pattern.intensity, (tth - WINDOW_DEG, tth + WINDOW_DEG), sigma=pattern.sigma,
                        model="pseudo-voigt", background="linear")
        assert peak.success, (tth, peak.reason)
        deviations[round(float(tth), 4)] = float(peak.centre - tth)
    worst = max(deviations, key=lambda t: abs(deviations[t]))
    print("peak deviations (deg):", {t: f"{d:+.5f}" for t, d in deviations.items()})
    print(f"worst: {deviations[worst]:+.5f} deg at {worst} deg")
    assert abs(deviations[worst]) < TOLERANCE_DEG
