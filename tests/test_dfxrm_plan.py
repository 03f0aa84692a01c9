"""DF-XRM alignment on the simulated beamline: a mosaic Si crystal on the goniometer, a
small detector raised (vertical scattering plane) or swung to +y (horizontal plane) to face
the reflection. After ``dfxrm_align`` the detector shows the Bragg spot, at the reflection's
2theta, with the photons the kinematic model predicts; 1 deg off along the rocking axis it
is gone; a rocking scan traces the mosaic Gaussian around the computed angle; bad requests
fail before any motor moves."""

from __future__ import annotations

import math

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky import RunEngine

from xrd_bluesky.errors import GeometryError
from xrd_bluesky.plans import dfxrm_align, rocking_scan
from xrd_bluesky.science.detector_pixels import pixel_geometry
from xrd_bluesky.science.dfxrm.cif_structure import read_cif
from xrd_bluesky.science.dfxrm.reflection_table import Instrument, reflection_table
from xrd_bluesky.science.reduction.peak_fitting import fit_peak
from xrd_bluesky.science.sim.single_crystal import single_crystal_sample
from xrd_bluesky.sim_devices import BeamlineConfig, make_beamline

ENERGY_KEV = 17.0
MOSAIC_FWHM_DEG = 0.01
#: An attenuated beam (ph/s): the brightest spot pixel stays far below the counter's depth.
FLUX_PH_S = 1e6
#: Reflection and the axis perpendicular to the scattering plane at the computed angles.
SETUPS = {"vertical": ((0, 0, 4), "chi"), "horizontal": ((2, 2, 0), "omega")}


@pytest.fixture(scope="module")
def silicon():
    structure = read_cif("Si")
    return structure, single_crystal_sample("Si", structure, thickness_mm=0.1, mosaic_fwhm_deg=MOSAIC_FWHM_DEG)


def _setup(tmp_path, silicon, plane):
    """Beamline with the crystal in the beam and the detector facing 2theta of the
    plane's reflection at 300 mm (the stage moves the detector across the beam)."""
    structure, sample = silicon
    hkl, axis = SETUPS[plane]
    bl = make_beamline(BeamlineConfig(detector="Pilatus100k", energy_keV=ENERGY_KEV, flux_ph_s=FLUX_PH_S, seed=3),
                       data_dir=tmp_path, library={"Si": sample})
    bl.sample_changer.slot.put("Si")
    two_theta = reflection_table(structure, ENERGY_KEV, Instrument(2.0, 40.0, plane)).find(hkl).two_theta_deg
    offset_mm = bl.stage.distance.position * math.tan(math.radians(two_theta))
    if plane == "vertical":
        bl.stage.y.move(offset_mm)  # dim1 (up)
    else:
        bl.stage.x.move(-offset_mm)  # dim2 is -y: the detector goes to +y
    return bl, hkl, axis


def _frame_sums(docs) -> np.ndarray:
    """Total counts of each frame of a run, in event order."""
    resource = next(doc for name, doc in docs if name == "stream_resource")
    with h5py.File(resource["uri"].removeprefix("file://localhost"), "r") as f:
        frames = f[resource["parameters"]["dataset"]][:]
    return np.clip(frames, 0, None).sum(axis=(1, 2)).astype(float)


def _run(RE, plan) -> list:
    docs = []
    RE(plan, lambda name, doc: docs.append((name, doc)))
    return docs


def _count(RE, bl) -> float:
    return float(_frame_sums(_run(RE, bp.count([bl.detector])))[0])


def _align(RE, bl, silicon, plane, hkl):
    return _run(RE, dfxrm_align(bl.goniometer, silicon[0], hkl, energy_keV=ENERGY_KEV,
                                instrument=Instrument(2.0, 40.0, plane), detectors=[bl.detector]))


@pytest.mark.parametrize("plane", ["vertical", "horizontal"])
def test_align_shows_the_bragg_spot(tmp_path, silicon, plane):
    """At the computed angles the frame holds the spot's predicted photons (x gain map) at the
    reflection's 2theta and azimuth (up, or towards +y); 1 deg off along the rocking axis
    only the dark current remains. In the vertical plane omega + 1 deg keeps the spot
    (omega turns G about the vertical: a second-order deviation, the spot moves sideways)."""
    RE = RunEngine({}, call_returns_result=False)
    bl, hkl, axis = _setup(tmp_path, silicon, plane)
    docs = _align(RE, bl, silicon, plane, hkl)
    start = docs[0][1]
    angles = start["angles_deg"]
    assert start["purpose"] == "dfxrm_alignment" and start["crystal"]["name"] == "Si"
    assert start["hkl"] == list(hkl) and start["energy_keV"] == ENERGY_KEV
    assert start["rocking_motor"] == getattr(bl.goniometer, axis).name
    assert abs(start["rocking_sensitivity"][axis]) == pytest.approx(1.0)
    event = next(doc for name, doc in docs if name == "event")
    assert [event["data"][getattr(bl.goniometer, a).name] for a in ("omega", "chi", "phi")] == pytest.approx(
        [angles["omega"], angles["chi"], angles["phi"]], abs=1e-12)
    on = _frame_sums(docs)[0]

    sample = silicon[1]
    poni = bl.true_poni()
    expected = sample.bragg_spots(bl.goniometer.angles(), poni, flux_ph_s=FLUX_PH_S, exposure_s=1.0,
                                  beamstop=bl.config.beamstop, polarization_factor=bl.config.polarization_factor)
    pixels = pixel_geometry(poni, bl.config.polarization_factor)
    weights = expected / expected.sum()
    assert math.degrees((weights * pixels.two_theta).sum()) == pytest.approx(start["two_theta_deg"], abs=0.005)
    azimuth = math.degrees(np.angle((weights * np.exp(1j * pixels.chi)).sum()))
    assert abs(math.remainder(azimuth - (90.0 if plane == "vertical" else 180.0), 360.0)) < 0.5

    rocking = getattr(bl.goniometer, axis)
    _run(RE, bps.mv(rocking, rocking.position + 1.0))
    off = _count(RE, bl)
    _run(RE, bps.mv(rocking, rocking.position - 1.0))
    _run(RE, bps.mv(bl.source.shutter, "closed"))
    dark = _count(RE, bl)
    _run(RE, bps.mv(bl.source.shutter, "open"))
    noise = math.sqrt(2 * dark)
    predicted = float((expected * bl.detector.response.gain).sum())
    print(f"{plane}: spot {on - dark:.4g} counts (predicted {predicted:.4g}: {expected.sum():.4g} photons x gain), "
          f"{axis} + 1 deg: {off - dark:.3g}, dark frame {dark:.4g}")
    assert on - dark > 100 * noise
    assert on - dark == pytest.approx(predicted, rel=0.01)  # Poisson 0.2 %, dark noise 0.2 %
    assert abs(off - dark) < 5 * noise

    if plane == "vertical":
        _run(RE, bps.mv(bl.goniometer.omega, angles["omega"] + 1.0))
        assert _count(RE, bl) - dark > 0.5 * (on - dark)


@pytest.mark.parametrize("plane", ["vertical", "horizontal"])
def test_rocking_curve_is_the_mosaic_gaussian(tmp_path, silicon, plane):
    """Integrated counts against the rocking angle (31 steps over 6 mosaic FWHM): the
    fitted Gaussian is centred on the computed angle within the mosaic FWHM and its FWHM is
    the mosaic FWHM within 30 % (rocking sensitivity 1)."""
    RE = RunEngine({}, call_returns_result=False)
    bl, hkl, axis = _setup(tmp_path, silicon, plane)
    computed = _align(RE, bl, silicon, plane, hkl)[0][1]["angles_deg"][axis]
    motor = getattr(bl.goniometer, axis)
    width = 6 * MOSAIC_FWHM_DEG
    docs = _run(RE, rocking_scan([bl.detector], motor, computed, width, 31))
    start = docs[0][1]
    assert (start["purpose"], start["plan_name"], start["rocking_motor"]) == ("dfxrm_alignment", "rocking_scan",
                                                                              motor.name)
    angle = np.array([doc["data"][motor.name] for name, doc in docs if name == "event"])
    counts = _frame_sums(docs)
    peak = fit_peak(angle, counts, (computed - width / 2, computed + width / 2))
    print(f"{plane}: rocking {axis} centre - computed = {peak.centre - computed:.2e} deg, "
          f"FWHM {peak.fwhm:.5f} deg (mosaic {MOSAIC_FWHM_DEG})")
    assert peak.success, peak.reason
    assert abs(peak.centre - computed) < MOSAIC_FWHM_DEG
    assert peak.fwhm == pytest.approx(MOSAIC_FWHM_DEG, rel=0.3)


@pytest.mark.parametrize("hkl, message", [((2, 2, 2), "forbidden"), ((2, 0, 0), "systematically absent"),
                                          ((4, 4, 4), "outside the instrument's range"), ((20, 20, 20), "unreachable")])
def test_bad_reflections_fail_before_any_motor_moves(tmp_path, silicon, hkl, message):
    RE = RunEngine({}, call_returns_result=False)
    bl, _, _ = _setup(tmp_path, silicon, "vertical")
    motors = (bl.goniometer.omega, bl.goniometer.chi, bl.goniometer.phi)
    for motor, value in zip(motors, (12.0, -3.0, 45.0)):
        motor.move(value)
    docs = []
    with pytest.raises(GeometryError, match=message):
        RE(dfxrm_align(bl.goniometer, silicon[0], hkl, energy_keV=ENERGY_KEV, detectors=[bl.detector]),
           lambda name, doc: docs.append(name))
    assert docs == []
    assert [m.position for m in motors] == [12.0, -3.0, 45.0]


def test_align_says_the_origin_choice_a_cif_left_open(tmp_path):
    """A CIF that leaves the origin choice open: the plan warns, and the run keeps the notice."""
    from test_cif_origin_choice import wyckoff_si

    from xrd_bluesky.errors import PlausibilityWarning

    bl = make_beamline(BeamlineConfig(detector="Pilatus100k", energy_keV=ENERGY_KEV, flux_ph_s=FLUX_PH_S, seed=3),
                       data_dir=tmp_path)
    with pytest.warns(PlausibilityWarning, match="two origin choices"):
        docs = _run(RunEngine({}), dfxrm_align(bl.goniometer, wyckoff_si(tmp_path), (2, 2, 0), energy_keV=ENERGY_KEV,
                                               detectors=[bl.detector]))
    start = next(doc for name, doc in docs if name == "start")
    assert len(start["crystal"]["notices"]) == 1 and "Taken: origin choice 1" in start["crystal"]["notices"][0]
