"""``xrd-bluesky strain`` on simulated rings of known strain, the GSAS-II ``.imctrl``
reader and conversion, and the command's named errors."""

from __future__ import annotations

import argparse
import csv
import math

import numpy as np
import pytest
from fabio.edfimage import EdfImage

from xrd_bluesky.cli.strain import add_parser
from xrd_bluesky.errors import (
    CorruptFrameError,
    GeometryError,
    ShapeMismatchError,
    UsageError,
)
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.sources.gsas2_imctrl import imctrl_poni, parse_value, read_imctrl

WAVELENGTH_M = 0.2e-10
SHAPE = (300, 300)
D0_A = 4.0
#: Truth of the simulated loaded image (dimensionless), load at 90 deg (vertical).
EPS_L, EPS_T, LOAD_DEG = 1.5e-3, -0.45e-3, 90.0


def strain(*argv) -> int:
    """Run ``xrd-bluesky strain ARGV`` through a parser built by :func:`add_parser`."""
    parser = argparse.ArgumentParser(prog="xrd-bluesky")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["strain", *map(str, argv)])
    return args.func(args)


def geometry() -> Poni:
    """A 300x300 detector of 200 um pixels at 0.5 m, beam at its centre."""
    return Poni.from_fit2d(500.0, 150.0, 150.0, wavelength=WAVELENGTH_M, detector="Detector",
                           detector_config='{"max_shape": [300, 300], "pixel1": 0.0002, "pixel2": 0.0002}')


def ring_image(poni: Poni, eps_l: float, eps_t: float, seed: int) -> np.ndarray:
    """Poisson counts of one Gaussian ring of d(chi) = d0 (1 + eps(chi)) on a flat background."""
    ai = poni.integrator()
    tth = ai.center_array(SHAPE, unit="2th_rad")
    chi = ai.center_array(SHAPE, unit="chi_rad")
    cos2 = np.cos(chi - math.radians(LOAD_DEG)) ** 2
    d = D0_A * (1 + eps_l * cos2 + eps_t * (1 - cos2))
    centre = 2 * np.arcsin(WAVELENGTH_M * 1e10 / (2 * d))
    sigma = 3.0 * 2e-4 / 0.5 / 2.355  # FWHM of 3 pixels
    mean = 20.0 + 2000.0 * np.exp(-0.5 * ((tth - centre) / sigma) ** 2)
    return np.random.default_rng(seed).poisson(mean).astype(np.int32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """PONI, reference (unstrained) and loaded image files of the simulation."""
    folder = tmp_path_factory.mktemp("strain")
    poni = geometry()
    poni_path = poni.write(folder / "sim.poni")
    for name, eps, seed in (("reference", (0.0, 0.0), 1), ("loaded", (EPS_L, EPS_T), 2)):
        EdfImage(data=ring_image(poni, *eps, seed)).write(str(folder / f"{name}.edf"))
    return folder, poni_path


def window() -> str:
    return f"{D0_A * 0.95}:{D0_A * 1.05}"


@pytest.mark.parametrize("mode", ["ring-mean", "per-sector"])
def test_recovers_simulated_strain_along_and_across_the_load(files, tmp_path, mode):
    """The fitted strains reproduce the simulation's truth within 4 of their sigmas
    (4: a 1-in-15000 chance miss of a correct estimate per value), and the sigma is
    honest: below 1e-4, a tenth of the strains, so the check is not vacuous."""
    folder, poni = files
    assert strain(folder / "loaded.edf", "--poni", poni, "--reference", folder / "reference.edf",
                  "--d-windows", window(), "--sectors", 24, "--load-azimuth", LOAD_DEG, "--d0", mode,
                  "-o", tmp_path) == 0
    lines = (tmp_path / "strain.csv").read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert any("xrd_bluesky_version" in line for line in header)
    assert any(str(poni) in line for line in header)
    row = next(csv.DictReader(line for line in lines if not line.startswith("#")))
    for key, truth in (("strain_loading", EPS_L), ("strain_transverse", EPS_T)):
        value, sigma = float(row[key]), float(row[f"{key}_sigma"])
        assert 0 < sigma < 1e-4
        assert abs(value - truth) < 4 * sigma, (key, value, sigma)
    assert abs(float(row["d0_A"]) / D0_A - 1) < 1e-4
    assert (tmp_path / "d_vs_azimuth.png").stat().st_size > 0


def test_load_azimuth_matters(files, tmp_path):
    """With the load said to be horizontal, along and across swap."""
    folder, poni = files
    strain(folder / "loaded.edf", "--poni", poni, "--reference", folder / "reference.edf", "--d-windows", window(),
           "--sectors", 24, "--load-azimuth", 0, "-o", tmp_path)
    row = next(csv.DictReader(line for line in (tmp_path / "strain.csv").read_text().splitlines()
                              if not line.startswith("#")))
    assert float(row["strain_loading"]) < 0 < float(row["strain_transverse"])


def test_image_of_another_shape_is_refused_naming_both(files, tmp_path):
    folder, poni = files
    EdfImage(data=np.ones((200, 300), np.int32)).write(str(tmp_path / "small.edf"))
    with pytest.raises(ShapeMismatchError, match=r"\(200, 300\).*\(300, 300\)"):
        strain(tmp_path / "small.edf", "--poni", poni, "--reference", folder / "reference.edf",
               "--d-windows", window(), "-o", tmp_path / "out")


def test_reference_that_is_not_an_image_is_refused(files, tmp_path):
    folder, poni = files
    text = tmp_path / "notes.edf"
    text.write_text("load 234 MPa\n")
    with pytest.raises(CorruptFrameError, match="notes.edf"):
        strain(folder / "loaded.edf", "--poni", poni, "--reference", text, "--d-windows", window(),
               "-o", tmp_path / "out")


def test_d_window_without_a_peak_is_named(files, tmp_path):
    folder, poni = files
    with pytest.raises(UsageError, match="d_window0.*holds no peak"):
        strain(folder / "loaded.edf", "--poni", poni, "--reference", folder / "reference.edf",
               "--d-windows", "3.0:3.02", "-o", tmp_path / "out")


def test_no_ring_named_is_a_usage_error(files, tmp_path):
    folder, poni = files
    with pytest.raises(UsageError, match="name the rings"):
        strain(folder / "loaded.edf", "--poni", poni, "--reference", folder / "reference.edf", "-o", tmp_path)


# --------------------------------------------------------------------------- .imctrl

IMCTRL = """type:PWDR
wavelength:0.2
distance:500.0
center:[np.float64(30.0), np.float64(28.0)]
tilt:1.5
rotation:40.0
invert_x:{invert_x}
invert_y:{invert_y}
PolaVal:[0.95, False]
varyList:{{'dist': True, 'tilt': True}}
"""


def test_values_are_parsed_without_eval():
    assert parse_value("[np.float64(168.59), np.float64(173.45)]") == [168.59, 173.45]
    assert parse_value("{'dist': True}") == {"dist": True}
    assert parse_value("__import__('os').system('true')") == "__import__('os').system('true')"


@pytest.mark.parametrize("invert_x, invert_y, flip", [(False, False, lambda a: a), (False, True, np.flipud),
                                                      (True, False, np.fliplr), (True, True, lambda a: a[::-1, ::-1])])
def test_flip_is_absorbed_into_the_geometry(tmp_path, invert_x, invert_y, flip):
    """The converted geometry on the array as stored gives every pixel the 2theta and
    chi that GSAS-II's conversion (orientation 3, pyFAI's default) gives it on the
    flipped array, to 1e-9 deg."""
    path = tmp_path / "g.imctrl"
    path.write_text(IMCTRL.format(invert_x=invert_x, invert_y=invert_y))
    controls = read_imctrl(path)
    assert controls.polarization == 0.95
    poni = imctrl_poni(controls, (2e-4, 2e-4), SHAPE)
    flipped = Poni.from_fit2d(500.0 / math.cos(math.radians(1.5)), 30.0 / 0.2, 28.0 / 0.2, tilt_deg=1.5,
                              tilt_plane_deg=130.0, wavelength=0.2e-10, detector="Detector",
                              detector_config='{"max_shape": [300, 300], "pixel1": 0.0002, "pixel2": 0.0002}')
    assert poni.dist == pytest.approx(0.5, rel=1e-12)
    for unit in ("2th_deg", "chi_deg"):
        ours = poni.integrator().center_array(SHAPE, unit=unit)
        theirs = flip(flipped.integrator().center_array(SHAPE, unit=unit))
        assert np.max(np.abs((ours - theirs + 180) % 360 - 180)) < 1e-9


def test_imctrl_without_geometry_is_named(tmp_path):
    path = tmp_path / "bad.imctrl"
    path.write_text("type:PWDR\nwavelength:0.2\ncenter:[1, 2]\n")
    with pytest.raises(GeometryError, match="distance, tilt, rotation"):
        read_imctrl(path)
