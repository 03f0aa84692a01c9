"""A calibration that contradicts its frame is not accepted (issue "Never a silent wrong result").

A CeO2 frame told it is Si refines to the same residual with the distance 0.4 % off
(Si 111 beside CeO2 111): the frame's other peaks, its rings and its energy must say so.
"""

import math
from dataclasses import replace

import fabio
import pytest
from conftest import realdata
from test_calibration import TRUTH, assert_geometry_close, beamstop_mask, render

from xrd_bluesky.errors import AmbiguousInputError, CalibrationError
from xrd_bluesky.science.calibration.refinement import refine_position
from xrd_bluesky.science.calibration.settings import CalibrationSettings
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.units import energy_keV
from xrd_bluesky.sim_devices.beamline import nominal_geometry

#: The simulator's frames at the reference position (17 keV, 200 mm, tilted, beam off centre).
POSITION = TRUTH.reference_position
GUESS = nominal_geometry(TRUTH).reference


@pytest.fixture(scope="module")
def frames():
    return {sample: render(sample, TRUTH.reference, seed) for seed, sample in enumerate(("CeO2", "LaB6"))}


def calibrate(image, guess: Poni, calibrant: str, **settings):
    return refine_position(image, guess, calibrant, mask=beamstop_mask(guess), label="simulated frame",
                           position=POSITION, settings=CalibrationSettings(**settings))


def assert_consistent(check, energy: float) -> None:
    """Every expected ring found, every significant peak explained, the fitted energy (keV)
    within 3 of its standard uncertainties or 0.5 % of the given one."""
    assert check.rings_found == check.rings_expected >= 3
    assert check.peaks_explained == check.peaks >= 3
    assert check.energy_keV == pytest.approx(energy)
    off = abs(check.fitted_energy_keV - energy)
    assert off < 3 * check.fitted_energy_sigma_keV or off < 0.005 * energy, check


@pytest.mark.parametrize("sample", ["CeO2", "LaB6"])
def test_the_right_calibrant_passes_on_the_simulator(frames, sample):
    found = calibrate(frames[sample], GUESS, sample)
    assert found.rings >= 3 and found.residual_deg < 0.005
    assert_geometry_close(found.poni, TRUTH.reference)
    assert_consistent(found.check, 17.0)


def test_ceo2_frame_told_si_names_ceo2(frames):
    """The testers' case: Si's rings all lie on CeO2 peaks, CeO2's 200 and 222 on none of Si's."""
    with pytest.raises(AmbiguousInputError, match=r"looks like CeO2, not Si: of its 7 significant peaks CeO2 "
                                                  r"explains 7 .*, Si 5 .*: 15\.4\d\d, 26\.[89]\d\d deg"):
        calibrate(frames["CeO2"], GUESS, "Si")


def test_lab6_frame_told_ceo2_fails(frames):
    with pytest.raises((CalibrationError, AmbiguousInputError)):
        calibrate(frames["LaB6"], GUESS, "CeO2")
    # with the residual threshold relaxed the refinement is accepted; the frame is not explained
    with pytest.raises(CalibrationError, match=r"CeO2 explains [0-3] of its \d+ significant peaks|rings expected"):
        calibrate(frames["LaB6"], replace(GUESS, dist=TRUTH.reference.dist), "CeO2", max_residual_deg=0.5)


def test_a_guess_too_far_off_names_found_and_expected_rings(frames):
    """14 % short: the rings are assigned wrongly; a relaxed residual threshold would accept it."""
    far = replace(GUESS, dist=0.86 * TRUTH.reference.dist)
    with pytest.raises(CalibrationError, match=r"only [0-2] of the \d+ CeO2 rings expected on the valid pixels "
                                               r"were found .*13\.405 deg \(3\.1244 A\)"):
        calibrate(frames["CeO2"], far, "CeO2", max_residual_deg=0.5)


@pytest.mark.parametrize("factor", [1.02, 1 / 1.02])
def test_an_energy_2_percent_off_is_named(frames, factor):
    """With one frame energy and distance are nearly degenerate, but on the simulator's
    rings (13-34 deg) a 2 % error is hundreds of its standard uncertainties."""
    guess = replace(GUESS, wavelength=GUESS.wavelength / factor)
    given = energy_keV(guess.wavelength)
    with pytest.raises(AmbiguousInputError, match=rf"energy of 1[67]\.9\d\d \+- 0\.0\d\d keV, not the given "
                                                  rf"{given:.3f} keV"):
        calibrate(frames["CeO2"], guess, "CeO2")


def dioptas():
    image = fabio.open(realdata("dioptas_ceo2", "CeO2_Pilatus1M.tif")).data.astype(float)
    ref = Poni.read(realdata("dioptas_ceo2", "CeO2_Pilatus1M_rawarray.poni"))
    f = ref.fit2d()
    guess = Poni.from_fit2d(f["directDist"] + 5.0, f["centerX"] + 20.0, f["centerY"], wavelength=ref.wavelength,
                            detector=ref.detector, detector_config=ref.detector_config)
    return image, guess, ref


def test_real_ceo2_passes_with_every_ring():
    """Dioptas' CeO2 frame: the 17 rings on the detector found, the energy (30.49 keV)
    consistent, the geometry as test_calibration asserts it."""
    image, guess, ref = dioptas()
    found = refine_position(image, guess, "CeO2", label="dioptas CeO2")
    assert found.check.rings_expected == 17
    assert_consistent(found.check, energy_keV(ref.wavelength))
    g, f = found.poni.fit2d(), ref.fit2d()
    assert abs(g["centerX"] - f["centerX"]) < 1 and abs(g["centerY"] - f["centerY"]) < 1
    assert abs(g["directDist"] - f["directDist"]) / f["directDist"] < 2e-3
    assert abs(math.degrees(found.poni.rot1 - ref.rot1)) < 0.05
    assert abs(math.degrees(found.poni.rot2 - ref.rot2)) < 0.05


def test_real_ceo2_told_si_names_ceo2():
    """The testers' real case: 12 Si rings found, all on CeO2 peaks; CeO2 explains them all."""
    image, guess, _ = dioptas()
    with pytest.raises(AmbiguousInputError, match=r"looks like CeO2, not Si: of its (\d+) significant peaks CeO2 "
                                                  r"explains \1 .*, Si 1\d "):
        refine_position(image, guess, "Si", label="dioptas CeO2")
