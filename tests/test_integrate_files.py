"""``xrd-bluesky integrate``: image files to .xye and Fit2D .chi patterns, on the real
CeO2 Pilatus 1M frame (Dioptas test data) and on files built from it."""

from __future__ import annotations

import argparse
import math

import fabio
import h5py
import numpy as np
import pytest
from conftest import realdata
from fabio.cbfimage import CbfImage
from fabio.edfimage import EdfImage

from xrd_bluesky.cli.integrate import add_parser
from xrd_bluesky.errors import CorruptFrameError, ShapeMismatchError
from xrd_bluesky.frames.reader import read_frames
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction.peak_fitting import fit_peak


def integrate(*argv) -> int:
    """Run ``xrd-bluesky integrate ARGV`` through a parser built by :func:`add_parser`."""
    parser = argparse.ArgumentParser(prog="xrd-bluesky")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["integrate", *map(str, argv)])
    return args.func(args)


def ceo2():
    """(frame path, PONI path, reference 2theta/intensity) of the Dioptas CeO2 data."""
    tif = realdata("dioptas_ceo2", "CeO2_Pilatus1M.tif")
    poni = realdata("dioptas_ceo2", "CeO2_Pilatus1M_rawarray.poni")
    ref = np.loadtxt(realdata("dioptas_ceo2", "CeO2_Pilatus1M.xy"), comments="#")
    return tif, poni, ref


def strongest_peaks(tth: np.ndarray, intensity: np.ndarray, n: int = 6) -> list[float]:
    """Positions of the ``n`` strongest reference maxima, at least 0.5 deg apart."""
    peaks: list[float] = []
    for k in np.argsort(intensity)[::-1]:
        if all(abs(tth[k] - p) > 0.5 for p in peaks) and 3 < tth[k] < tth.max() - 1:
            peaks.append(float(tth[k]))
        if len(peaks) == n:
            break
    return peaks


def header_lines(path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("#")]


def read_chi(path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    return lines[:4], np.loadtxt(lines[4:], ndmin=2)


def test_two_theta_pattern_reproduces_dioptas_peaks_and_chi_matches_xye(tmp_path):
    """Integrated to 2theta on Dioptas' grid size without polarization correction (as
    the reference), the written peaks agree with Dioptas' .xy within 0.005 deg; the
    .chi file holds the .xye's first two columns under Fit2D's four header lines."""
    tif, poni, ref = ceo2()
    assert integrate(tif, "--poni", poni, "--unit", "2th_deg", "--npt", len(ref),
                     "--polarization", "none", "-o", tmp_path / "out") == 0
    xye = np.loadtxt(tmp_path / "out" / "CeO2_Pilatus1M.xye")
    assert xye.shape == (len(ref), 3) and np.all(np.isfinite(xye)) and np.all(xye[:, 2] > 0)
    for p in strongest_peaks(ref[:, 0], ref[:, 1]):
        window = (p - 0.15, p + 0.15)
        fr = fit_peak(ref[:, 0], ref[:, 1], window, background="linear")
        fo = fit_peak(xye[:, 0], xye[:, 1], window, background="linear")
        assert fr.success and fo.success, (fr.reason, fo.reason)
        assert abs(fo.centre - fr.centre) < 0.005, p

    head = header_lines(tmp_path / "out" / "CeO2_Pilatus1M.xye")
    assert any("2th_deg" in line for line in head) and any("CeO2_Pilatus1M_rawarray.poni" in line for line in head)
    assert any("polarization_factor: none" in line for line in head)
    assert any("xrd_bluesky_version" in line for line in head)
    # GSAS-II reads an .xye as q data as soon as a comment line holds a lowercase 'q'
    assert not any("q" in line for line in head)

    chi_head, chi = read_chi(tmp_path / "out" / "CeO2_Pilatus1M.chi")
    assert chi_head[0] == "CeO2_Pilatus1M"
    assert chi_head[1:3] == ["2-Theta Angle (Degrees)", "Intensity"]
    assert int(chi_head[3]) == len(chi) == len(xye)
    np.testing.assert_array_equal(chi, xye[:, :2])


@pytest.mark.parametrize("unit, label, inverse_length", [
    ("q_nm^-1", "Q (Inverse Nanometres)", "nm"), ("q_A^-1", "Q (Inverse Angstroms)", "A")])
def test_q_pattern_read_as_gsas2_does_lands_on_the_reference_peaks(tmp_path, unit, label, inverse_length):
    """A q pattern carries its wavelength where GSAS-II looks for it (second word of the
    first comment line holding a 'q', in the length unit inverse to q's): converted with
    it, 2theta = 2 asin(wavelength q / 4 pi), the peaks land on Dioptas' 2theta peaks."""
    tif, poni, ref = ceo2()
    integrate(tif, "--poni", poni, "--unit", unit, "--npt", len(ref), "--polarization", "none", "-o", tmp_path)
    xye_path = tmp_path / "CeO2_Pilatus1M.xye"
    first_q_line = next(line for line in header_lines(xye_path) if "q" in line)
    wavelength = float(first_q_line.split()[1])
    assert f"wavelength in {inverse_length}" in first_q_line
    scale = 1e9 if inverse_length == "nm" else 1e10
    assert wavelength == pytest.approx(Poni.read(poni).wavelength * scale, rel=1e-7)
    q, intensity, _ = np.loadtxt(xye_path).T
    tth = np.degrees(2 * np.arcsin(wavelength * q / (4 * math.pi)))
    for p in strongest_peaks(ref[:, 0], ref[:, 1], n=3):
        window = (p - 0.15, p + 0.15)
        fr = fit_peak(ref[:, 0], ref[:, 1], window, background="linear")
        fo = fit_peak(tth, intensity, window, background="linear")
        assert fr.success and fo.success, (fr.reason, fo.reason)
        assert abs(fo.centre - fr.centre) < 0.005, p
    chi_head, chi = read_chi(tmp_path / "CeO2_Pilatus1M.chi")
    assert chi_head[1] == label and int(chi_head[3]) == len(chi)


def test_hdf5_stack_gives_one_pattern_per_frame_linear_in_counts(tmp_path):
    """Frames of /entry/data/data, the second twice the first: two patterns, the second
    with twice the intensity (the integration is linear without a dark)."""
    tif, poni, _ = ceo2()
    frame = fabio.open(str(tif)).data
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f.create_dataset("/entry/data/data", data=np.stack([frame, 2 * frame]), chunks=(1, *frame.shape))
    integrate(tmp_path / "stack.h5", "--poni", poni, "--npt", 1000, "-o", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "stack_00000.chi", "stack_00000.xye", "stack_00001.chi", "stack_00001.xye"]
    one = np.loadtxt(tmp_path / "out" / "stack_00000.xye")
    two = np.loadtxt(tmp_path / "out" / "stack_00001.xye")
    np.testing.assert_array_equal(one[:, 0], two[:, 0])
    np.testing.assert_allclose(two[:, 1], 2 * one[:, 1], rtol=1e-6)
    assert any("stack.h5 frame 1" in line for line in header_lines(tmp_path / "out" / "stack_00001.xye"))

    with h5py.File(tmp_path / "single.nxs", "w") as f:  # a 2D dataset is one frame named by the file
        f.create_dataset("/entry/data/data", data=frame)
    [(name, data)] = read_frames(tmp_path / "single.nxs")
    assert name == "single" and np.array_equal(data, frame)


def test_gain_divides_and_its_bad_pixels_are_masked(tmp_path):
    """A gain of 2 halves the pattern; its zero and NaN pixels act as a mask: the result
    equals the gain-free pattern integrated with those pixels masked, divided by 2."""
    tif, poni, _ = ceo2()
    shape = fabio.open(str(tif)).data.shape
    gain = np.full(shape, 2.0, np.float32)
    gain[400:450, 300:700] = 0.0
    gain[600:610, :] = np.nan
    EdfImage(data=gain).write(str(tmp_path / "gain.edf"))
    mask = (~(gain > 0)).astype(np.uint8)
    EdfImage(data=mask).write(str(tmp_path / "mask.edf"))
    common = ["--poni", poni, "--npt", 800, "--unit", "2th_deg"]
    integrate(tif, *common, "--gain", tmp_path / "gain.edf", "-o", tmp_path / "gain")
    integrate(tif, *common, "--mask", tmp_path / "mask.edf", "-o", tmp_path / "mask")
    with_gain = np.loadtxt(tmp_path / "gain" / "CeO2_Pilatus1M.xye")
    masked = np.loadtxt(tmp_path / "mask" / "CeO2_Pilatus1M.xye")
    np.testing.assert_array_equal(with_gain[:, 0], masked[:, 0])
    np.testing.assert_allclose(with_gain[:, 1], masked[:, 1] / 2, rtol=1e-6)


def test_empty_bins_are_left_out_of_both_files(tmp_path):
    """Masking the band 10-12 deg 2theta empties the bins inside it (pyFAI fits the
    radial range to the unmasked pixels, so only a gap inside the range leaves empty
    bins): no NaN is written, the band has no rows, and the header counts the bins
    left out."""
    tif, poni, _ = ceo2()
    tth = np.degrees(Poni.read(poni).integrator().twoThetaArray())
    band = (tth > 10.0) & (tth < 12.0)
    EdfImage(data=band.astype(np.uint8)).write(str(tmp_path / "band.edf"))
    npt = 600
    integrate(tif, "--poni", poni, "--unit", "2th_deg", "--npt", npt, "--mask", tmp_path / "band.edf",
              "-o", tmp_path)
    xye = np.loadtxt(tmp_path / "CeO2_Pilatus1M.xye")
    assert np.all(np.isfinite(xye))
    assert len(xye) < npt
    assert not np.any((xye[:, 0] > 10.1) & (xye[:, 0] < 11.9))
    assert any(f"omitted: {npt - len(xye)} of {npt} bins" in line
               for line in header_lines(tmp_path / "CeO2_Pilatus1M.xye"))
    chi_head, chi = read_chi(tmp_path / "CeO2_Pilatus1M.chi")
    assert np.all(np.isfinite(chi))
    assert int(chi_head[3]) == len(chi) == len(xye)
    np.testing.assert_array_equal(chi, xye[:, :2])


def _truncated_tif(tmp_path):
    path = tmp_path / "cut.tif"
    path.write_bytes(realdata("dioptas_ceo2", "CeO2_Pilatus1M.tif").read_bytes()[:1000])
    return path


def _half_edf(tmp_path):  # fabio pads a short EDF with zeros and only logs it
    frame = fabio.open(str(realdata("dioptas_ceo2", "CeO2_Pilatus1M.tif"))).data
    path = tmp_path / "half.edf"
    EdfImage(data=frame).write(str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _truncated_h5(tmp_path):
    path = tmp_path / "cut.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.ones((2, 1043, 981), np.int32))
    path.write_bytes(path.read_bytes()[:3000])
    return path


def _cut_cbf(tmp_path):  # cut inside the binary-section header: fabio alone never returns
    path = tmp_path / "cut.cbf"
    CbfImage(data=np.ones((1043, 981), np.int32)).write(str(path))
    path.write_bytes(path.read_bytes()[:300])
    return path


def _no_dataset_h5(tmp_path):
    path = tmp_path / "elsewhere.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/instrument/detector/data", data=np.ones((1043, 981), np.int32))
    return path


@pytest.mark.filterwarnings("ignore:Truncated File Read")  # PIL, tried by fabio on the cut TIFF
@pytest.mark.parametrize("make, culprit", [
    (_truncated_tif, "cut.tif"), (_half_edf, "half.edf"), (_cut_cbf, "cut.cbf"), (_truncated_h5, "cut.h5"),
    (_no_dataset_h5, "elsewhere.h5.*/entry/data/data")])
def test_unreadable_frame_files_are_named(tmp_path, make, culprit):
    _, poni, _ = ceo2()
    path = make(tmp_path)
    with pytest.raises(CorruptFrameError, match=culprit):
        integrate(path, "--poni", poni, "-o", tmp_path / "out")


@pytest.mark.parametrize("option", ["--dark", "--gain", "--mask"])
def test_correction_image_of_wrong_shape_is_named(tmp_path, option):
    tif, poni, _ = ceo2()
    EdfImage(data=np.ones((100, 100), np.float32)).write(str(tmp_path / "small.edf"))
    with pytest.raises(ShapeMismatchError, match=rf"{option[2:]} file .*small\.edf has shape \(100, 100\)"):
        integrate(tif, "--poni", poni, option, tmp_path / "small.edf", "-o", tmp_path / "out")


def test_frame_of_wrong_shape_is_named(tmp_path):
    _, poni, _ = ceo2()
    EdfImage(data=np.ones((100, 100), np.int32)).write(str(tmp_path / "tiny.edf"))
    with pytest.raises(ShapeMismatchError, match=r"tiny\.edf has shape \(100, 100\)"):
        integrate(tmp_path / "tiny.edf", "--poni", poni, "-o", tmp_path / "out")


def test_unknown_unit_is_refused_with_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        integrate("x.tif", "--poni", "x.poni", "--unit", "r_mm", "-o", tmp_path)
    err = capsys.readouterr().err
    assert "r_mm" in err and all(u in err for u in ("2th_deg", "q_nm^-1", "q_A^-1"))
