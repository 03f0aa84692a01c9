"""Bad input, tried systematically: each kind gets a domain error (or a flag) that names
the file, key or value at fault, in under 1 s.

Kinds: nonsense geometries and PONI files; truncated TIFF, EDF and HDF5 frames; frames
of the wrong shape or element type; NaN, infinite, negative and saturated pixels;
empty radial ranges and bins; zero, NaN and negative monitors, exposures and
thicknesses; malformed pattern files; missing or unusable document keys.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
from fabio.tifimage import TifImage
from PIL import Image

from xrd_bluesky.cli import fit_peaks as fit_peaks_files
from xrd_bluesky.cli import integrate as integrate_files
from xrd_bluesky.errors import (
    CorruptFrameError,
    GeometryError,
    InvalidFrameError,
    MissingMetadataError,
    MonitorError,
    ShapeMismatchError,
)
from xrd_bluesky.frames import (
    FrameEvent,
    FrameRegistry,
    detector_config,
    frames_per_event,
    mean_dark,
    reader,
    stage_position,
)
from xrd_bluesky.frames.reader import FrameRef
from xrd_bluesky.frames.stream import StreamFrames
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction import corrected_integration
from xrd_bluesky.science.reduction.absolute_scale import Exposure, standard_factor
from xrd_bluesky.science.reduction.corrected_integration import (
    KERNEL_DTYPES,
    CorrectedIntegrator,
)
from xrd_bluesky.science.reduction.integration import IntegrationResult
from xrd_bluesky.science.reduction.monitors import FluxCalibration, transmission
from xrd_bluesky.science.reduction.single_frame import integrate_1d
from xrd_bluesky.store import open_catalog

#: A 16 x 24 detector of 1 mm pixels: integrations take milliseconds.
TINY_SHAPE = (16, 24)
TINY_CONFIG = json.dumps({"pixel1": 1e-3, "pixel2": 1e-3, "max_shape": list(TINY_SHAPE)})
#: Longest accepted time to raise (s).
WITHIN_S = 1.0


def tiny_poni(**change) -> Poni:
    """A geometry of the tiny detector (0.1 m, beam near its centre), with ``change``."""
    params = dict(dist=0.1, poni1=0.0075, poni2=0.0115, wavelength=1e-10, detector="Detector",
                  detector_config=TINY_CONFIG)
    return Poni(**{**params, **change})


def warm_up_integration() -> None:
    """Build the tiny detector's integrators and run the compiled kernel once per
    frame dtype, so that the timed calls measure checks, not first-call compilation."""
    poni = tiny_poni()
    integrate_1d(np.ones(TINY_SHAPE), poni, npt=10)
    integrator = CorrectedIntegrator(poni, npt=10)
    for dtype in KERNEL_DTYPES:
        integrator.sums(np.ones(TINY_SHAPE, dtype))


@pytest.fixture(scope="module")
def warm():
    warm_up_integration()


@contextmanager
def raises_quickly(error: type[Exception], match: str):
    """``pytest.raises(error, match=match)`` that also requires the error within 1 s."""
    start = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        yield info
    elapsed = time.perf_counter() - start
    assert elapsed < WITHIN_S, f"{error.__name__} took {elapsed:.3f} s"


# --------------------------------------------------------------------------- geometry

@pytest.mark.parametrize("change, culprit", [
    ({"dist": 0.0}, "dist"), ({"dist": -0.1}, "dist"), ({"dist": math.nan}, "dist"),
    ({"wavelength": 1e-12}, "wavelength"), ({"wavelength": 6e-10}, "wavelength"),
    ({"rot1": math.inf}, "rot1"), ({"detector": "NoSuchDetector"}, "NoSuchDetector"),
])
def test_nonsense_geometry_is_refused(change, culprit):
    params = dict(dist=0.3, poni1=0.1, poni2=0.1, wavelength=7e-11, detector="Pilatus1M")
    with pytest.raises(GeometryError, match=culprit):
        Poni(**{**params, **change})


def _pixels(pixel1, pixel2=1e-3) -> dict:
    return {"detector_config": json.dumps({"pixel1": pixel1, "pixel2": pixel2, "max_shape": list(TINY_SHAPE)})}


@pytest.mark.parametrize("change, culprit", [
    ({"dist": -1e-3}, r"dist=-0\.001 m"), ({"dist": math.nan}, "dist=nan"), ({"dist": 5e3}, r"dist=5000\.0 m"),
    ({"dist": "0.1"}, "dist='0.1'"), ({"poni1": 1e200}, r"poni1=1e\+200 m"), ({"rot3": -math.inf}, "rot3=-inf"),
    ({"wavelength": 4e-12}, r"wavelength=4e-12 m \(0\.04 A\) is outside 0\.05-5\.0 A"),
    ({"wavelength": 5.5e-10}, r"wavelength=5\.5e-10 m \(5\.5 A\) is outside"),
    ({"wavelength": math.nan}, "wavelength=nan"),
    (_pixels(-1e-4), r"pixel1=-0\.0001 m"), (_pixels(1e-3, math.nan), "pixel2=nan m"),
    (_pixels(0.0), "pixel1=None m"), (_pixels(2.0), r"pixel1=2\.0 m"),
    ({"detector_config": "{not json"}, r"config '\{not json'"), ({"detector": 7}, "detector=7"),
    ({"detector_config": json.dumps({"pixel1": 1e-3, "pixel2": 1e-3, "max_shape": [0, 24]})}, r"shape \(0, 24\)"),
])
def test_nonsense_geometry_names_the_parameter_and_value(change, culprit):
    with raises_quickly(GeometryError, culprit):
        tiny_poni(**change)


#: A valid PONI file of the tiny detector, as pyFAI writes it (key: value lines).
PONI_LINES = {"poni_version": "2.1", "Detector": "Detector",
              "Detector_config": json.dumps({"pixel1": 1e-3, "pixel2": 1e-3, "max_shape": list(TINY_SHAPE),
                                             "orientation": 3}),
              "Distance": "0.1", "Poni1": "0.0075", "Poni2": "0.0115", "Rot1": "0", "Rot2": "0", "Rot3": "0",
              "Wavelength": "1e-10"}


@pytest.mark.parametrize("change, culprit", [
    ({"Distance": "0"}, r"dist=0\.0 m"), ({"Distance": "-0.2"}, r"dist=-0\.2 m"), ({"Distance": "nan"}, "dist=nan"),
    ({"Distance": "abc"}, "'abc'"), ({"Distance": None}, "has no Distance"), ({"Poni2": None}, "has no Poni2"),
    ({"Wavelength": "1e-12"}, r"wavelength=1e-12 m \(0\.01 A\)"), ({"Wavelength": "6e-10"}, r"\(6 A\)"),
    ({"Wavelength": None}, "has no Wavelength"), ({"Rot2": "inf"}, "rot2=inf"),
    ({"Detector_config": json.dumps({"pixel1": -1e-4, "pixel2": 1e-4, "max_shape": [16, 24], "orientation": 3})},
     r"pixel1=-0\.0001 m"),
    ({"Detector_config": json.dumps({"pixel1": 1e-4, "pixel2": 0, "max_shape": [16, 24], "orientation": 3})},
     "pixel2=None m"),
    ({"Detector": "NoSuchDetector", "Detector_config": None}, "(?i:NoSuchDetector) is unknown"),
])
def test_nonsense_poni_file_names_the_file_and_value(tmp_path, change, culprit):
    path = tmp_path / "nonsense.poni"
    lines = {**PONI_LINES, **change}
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items() if v is not None))
    with raises_quickly(GeometryError, rf"nonsense\.poni.*{culprit}"):
        Poni.read(path)


def test_the_valid_poni_file_reads_back(tmp_path):
    path = tmp_path / "good.poni"
    path.write_text("".join(f"{k}: {v}\n" for k, v in PONI_LINES.items()))
    assert Poni.read(path).dist == 0.1


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00\x01", b"just some words\n"])
def test_unreadable_poni_file_is_named(tmp_path, content):
    path = tmp_path / "junk.poni"
    path.write_bytes(content)
    with raises_quickly(GeometryError, "junk.poni"):
        Poni.read(path)


def test_missing_poni_file_is_named(tmp_path):
    with pytest.raises(GeometryError, match="nothere.poni"):
        Poni.read(tmp_path / "nothere.poni")


# --------------------------------------------------------------------------- frame files

def test_truncated_hdf5_frame_file_is_named(tmp_path):
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.zeros((2, 4, 4), np.int32))
    path.write_bytes(path.read_bytes()[:200])  # truncate
    with pytest.raises(CorruptFrameError, match="frames.h5"):
        FrameRef(path, "/entry/data/data", 0).read(1)


def test_missing_frames_are_named(tmp_path):
    path = tmp_path / "short.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.zeros((1, 4, 4), np.int32))
    with pytest.raises(CorruptFrameError, match="short.h5.*holds 1 frames"):
        FrameRef(path, "/entry/data/data", 3).read(1)


def _unwritten_frames(f: h5py.File) -> None:  # allocated shape, frames 1-3 never written
    f.create_dataset("/entry/data/data", shape=(4, 4, 4), dtype=np.int32, chunks=(1, 4, 4))[0] = 1


def _single_image(f: h5py.File) -> None:
    f.create_dataset("/entry/data/data", data=np.zeros((4, 4), np.int32))


def _group(f: h5py.File) -> None:
    f.create_group("/entry/data/data")


@pytest.mark.parametrize("make, index, error, culprit", [
    (_unwritten_frames, 2, CorruptFrameError, r"frames\.h5:/entry/data/data: frames \[2\] were never written"),
    (_single_image, 0, ShapeMismatchError, r"frames\.h5:/entry/data/data has shape \(4, 4\)"),
    (_group, 0, CorruptFrameError, r"frames\.h5 has no dataset /entry/data/data"),
    (_unwritten_frames, -1, CorruptFrameError, r"frames\.h5:/entry/data/data: event index -1"),
])
def test_hdf5_frames_that_are_not_there_are_named(tmp_path, make, index, error, culprit):
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        make(f)
    with raises_quickly(error, culprit):
        FrameRef(path, "/entry/data/data", index).read(1)


def test_written_frames_of_a_partly_written_file_read(tmp_path):
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        _unwritten_frames(f)
    assert FrameRef(path, "/entry/data/data", 0).read(1).sum() == 16


def integrate_cli(*argv) -> int:
    """Run ``xrd-bluesky integrate ARGV`` through its own parser."""
    parser = argparse.ArgumentParser(prog="xrd-bluesky")
    integrate_files.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["integrate", *map(str, argv)])
    return args.func(args)


def _counts(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(100.0, TINY_SHAPE).astype(np.int32)


def _cut_in_strip(tmp_path: Path) -> Path:  # uncompressed, cut in its image data
    path = tmp_path / "frame.tif"
    TifImage(data=_counts()).write(str(path))
    path.write_bytes(path.read_bytes()[:-300])
    return path


def _cut_compressed(tmp_path: Path) -> Path:  # deflate: libtiff pads a short strip silently
    path = tmp_path / "frame.tif"
    Image.fromarray(_counts()).save(path, compression="tiff_adobe_deflate")
    path.write_bytes(path.read_bytes()[:-40])
    return path


def _cut_in_header(tmp_path: Path) -> Path:
    path = tmp_path / "frame.tif"
    Image.fromarray(_counts()).save(path, compression="tiff_adobe_deflate")
    path.write_bytes(path.read_bytes()[:100])
    return path


@pytest.mark.filterwarnings("ignore:Truncated File Read")  # PIL, tried by fabio on the cut TIFF
@pytest.mark.parametrize("make", [_cut_in_strip, _cut_compressed, _cut_in_header])
def test_truncated_tiff_is_a_corrupt_frame_named(tmp_path, make):
    path = make(tmp_path)
    with raises_quickly(CorruptFrameError, r"frame\.tif"):
        reader.read_frames(path)


def test_whole_compressed_tiff_reads(tmp_path):
    path = tmp_path / "frame.tif"
    Image.fromarray(_counts()).save(path, compression="tiff_adobe_deflate")
    np.testing.assert_array_equal(reader.read_frames(path)[0][1], _counts())


@pytest.fixture
def tiny_poni_file(tmp_path) -> Path:
    return tiny_poni().write(tmp_path / "tiny.poni")


@pytest.mark.parametrize("value, culprit", [
    (np.nan, f"{TINY_SHAPE[0] * TINY_SHAPE[1]} NaN"), (np.inf, f"{TINY_SHAPE[0] * TINY_SHAPE[1]} infinite"),
    (-2.0, f"{TINY_SHAPE[0] * TINY_SHAPE[1]} negative")])
def test_frame_file_without_a_valid_pixel_is_named(tmp_path, tiny_poni_file, warm, value, culprit):
    path = tmp_path / "dead.tif"
    TifImage(data=np.full(TINY_SHAPE, value, np.float32)).write(str(path))
    with raises_quickly(InvalidFrameError, rf"dead\.tif: every pixel is masked or invalid.*{culprit}"):
        integrate_cli(path, "--poni", tiny_poni_file, "--npt", 10, "-o", tmp_path / "out")


def test_bad_pixels_of_a_frame_file_are_masked(tmp_path, tiny_poni_file, warm):
    frame = _counts().astype(np.float32)
    frame[:4] = np.nan
    frame[4:8] = -1.0
    path = tmp_path / "patchy.tif"
    TifImage(data=frame).write(str(path))
    integrate_cli(path, "--poni", tiny_poni_file, "--npt", 10, "-o", tmp_path / "out")
    rows = np.loadtxt(tmp_path / "out" / "patchy.xye", comments="#")
    assert len(rows) > 0 and np.all(np.isfinite(rows)) and np.all(rows[:, 1] > 0)


# --------------------------------------------------------------------------- pattern files

@pytest.mark.parametrize("content, culprit", [
    (None, "not found"), ("", r"holds no rows of numbers"), ("1\n2\n3\n", r"2 columns .* \(3, 1\)"),
    ("1 2\n3 4\n", r"3 rows.*\(2, 2\)"), ("1 2 3\n4 5\n6 7 8\n", "columns"), ("a b\nc d\ne f\n", "'a'"),
    (b"\x89PNG\r\n\x1a\n\xff\x00", "decode"),
])
def test_unreadable_pattern_file_is_named(tmp_path, content, culprit):
    path = tmp_path / "pattern.xye"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with raises_quickly(CorruptFrameError, rf"pattern\.xye.*{culprit}"):
        fit_peaks_files.read_pattern(path)


def test_fit_on_a_pattern_without_finite_points_is_flagged(tmp_path, capsys):
    path = tmp_path / "nan.xye"
    path.write_text("".join(f"{x} nan nan\n" for x in range(20)))
    args = argparse.Namespace(patterns=[str(path)], peak=[(2.0, 8.0)], model="gaussian", background="constant",
                              output=str(tmp_path / "peaks.csv"))
    fit_peaks_files.run(args)
    assert "FAILED: 0 valid points in window 2-8" in capsys.readouterr().out
    assert "False" in (tmp_path / "peaks.csv").read_text()


# --------------------------------------------------------------------------- frames

def _with(value, where=(slice(0, 4),)) -> np.ndarray:
    frame = _counts().astype(np.float64)
    frame[where] = value
    return frame


#: Pixels of rows 0-3 of the tiny detector.
BAD_ROWS = np.zeros(TINY_SHAPE, bool)
BAD_ROWS[:4] = True


@pytest.mark.parametrize("value, max_count", [(np.nan, None), (np.inf, None), (-1.0, None), (1e40, None),
                                              (5000.0, 1000.0)])
def test_invalid_pixels_are_masked_not_integrated(warm, value, max_count):
    """NaN, infinite, negative, beyond-float32 and saturated pixels are left out: the
    pattern equals that of the clean frame with those pixels masked."""
    poni = tiny_poni()
    clean = integrate_1d(_counts(), poni, npt=10, mask=BAD_ROWS)
    dirty = integrate_1d(_with(value), poni, npt=10, max_count=max_count)
    np.testing.assert_allclose(dirty.intensity, clean.intensity, rtol=1e-6)


@pytest.mark.parametrize("value, max_count", [(np.nan, None), (np.inf, None), (-1.0, None), (5000.0, 1000.0)])
def test_invalid_pixels_are_left_out_of_the_corrected_sums(warm, value, max_count):
    poni = tiny_poni()
    summed = CorrectedIntegrator(poni, npt=10, max_count=max_count).integrate(_with(value))
    reference = CorrectedIntegrator(poni, npt=10, mask=BAD_ROWS).integrate(_counts())
    np.testing.assert_allclose(summed.intensity, reference.intensity, rtol=1e-9)


N_TINY = TINY_SHAPE[0] * TINY_SHAPE[1]


@pytest.mark.parametrize("frame, max_count, culprit", [
    (np.full(TINY_SHAPE, np.nan), None, f"{N_TINY} NaN"), (np.full(TINY_SHAPE, -np.inf), None, f"{N_TINY} infinite"),
    (np.full(TINY_SHAPE, -3), None, f"{N_TINY} negative"), (np.full(TINY_SHAPE, 2000), 1000,
                                                               rf"{N_TINY} saturated \(>= 1000 counts\)"),
    (np.full(TINY_SHAPE, 1e300), None, f"{N_TINY} infinite"),  # float32 overflow (integrate_1d only)
])
def test_frame_without_a_valid_pixel_raises_naming_it(warm, frame, max_count, culprit):
    poni = tiny_poni()
    with raises_quickly(InvalidFrameError, rf"scan 7 frame 3: every pixel is masked or invalid.*{culprit}"):
        integrate_1d(frame, poni, npt=10, max_count=max_count, source="scan 7 frame 3")
    if frame.flat[0] != 1e300:  # finite in float64: valid, if absurd, for the float64 kernel
        integrator = CorrectedIntegrator(poni, npt=10, max_count=max_count)
        with raises_quickly(InvalidFrameError, rf"scan 7 frame 3: no valid pixel.*{culprit}"):
            integrator.sums(frame, source="scan 7 frame 3")


def test_fully_masked_frame_raises_naming_the_mask(warm):
    with raises_quickly(InvalidFrameError, rf"frame: every pixel .*{N_TINY} masked by the mask"):
        integrate_1d(_counts(), tiny_poni(), npt=10, mask=np.ones(TINY_SHAPE, bool))
    with raises_quickly(InvalidFrameError, rf"{N_TINY} masked by the mask, a non-finite dark or a non-positive flat"):
        integrate_1d(_counts(), tiny_poni(), npt=10, flat=np.zeros(TINY_SHAPE))
    with raises_quickly(GeometryError, "every pixel of detector 'Detector' is masked"):
        CorrectedIntegrator(tiny_poni(), npt=10, gain=np.full(TINY_SHAPE, np.nan))


def test_wrong_shape_frame_is_a_shape_error_even_under_python_O():
    poni = Poni(0.3, 0.1, 0.1, wavelength=7e-11, detector="Pilatus1M")
    with pytest.raises(ShapeMismatchError, match=r"\(100, 100\).*Pilatus1M"):
        integrate_1d(np.ones((100, 100)), poni)


@pytest.mark.parametrize("frame, culprit", [
    (np.ones((16, 23)), r"frame\.h5 has shape \(16, 23\), detector 'Detector' needs \(16, 24\)"),
    (np.ones((1, 16, 24)), r"frame\.h5 has shape \(1, 16, 24\)"), (np.float64(3.0), r"frame\.h5 has shape \(\)"),
    (np.ones(TINY_SHAPE, complex), r"frame\.h5 holds complex128 values, not counts"),
    (np.full(TINY_SHAPE, "1"), r"frame\.h5 holds <U1 values"), (np.ones(TINY_SHAPE, object), "frame.h5 holds object"),
])
def test_wrong_shape_or_type_of_frame_is_named(warm, frame, culprit):
    poni = tiny_poni()
    with raises_quickly(ShapeMismatchError, culprit):
        integrate_1d(frame, poni, npt=10, source="frame.h5")
    integrator = CorrectedIntegrator(poni, npt=10)
    with raises_quickly(ShapeMismatchError, culprit):
        integrator.sums(frame, source="frame.h5")


@pytest.mark.parametrize("array", ["dark", "flat", "mask"])
def test_correction_array_of_wrong_shape_is_named(array):
    with raises_quickly(ShapeMismatchError, rf"{array} has shape \(3, 3\)"):
        integrate_1d(_counts(), tiny_poni(), npt=10, **{array: np.ones((3, 3))})


# --------------------------------------------------------------------------- empty q range and bins

def _never_split(*args, **kwargs):
    raise AssertionError("the pixel-splitting matrix was built for an empty range")


@pytest.mark.parametrize("kwargs, culprit", [
    ({"radial_range": (40.0, 50.0)}, r"radial range 40-50 1/nm \(q_nm\^-1\) is empty: the valid pixels of "
                                     r"detector 'Detector' cover [\d.]+-[\d.]+ 1/nm"),
    ({"radial_range": (-5.0, -1.0)}, "radial range -5--1 1/nm"),
    ({"radial_range": (30.0, 60.0), "unit": "2th_deg"}, r"radial range 30-60 deg \(2th_deg\) is empty"),
    ({"radial_range": (5.0, 5.0)}, r"radial range \(5\.0, 5\.0\) 1/nm is empty or reversed"),
    ({"radial_range": (math.nan, 5.0)}, "radial range .nan, 5.0. 1/nm is empty or reversed"),
    ({"radial_range": ("a", "b")}, r"radial range \('a', 'b'\) 1/nm is not two numbers"),
    ({"npt": 0}, "npt=0"), ({"npt": -5}, "npt=-5"), ({"npt": 2.5}, r"npt=2\.5"),
    ({"npt_azim": 0}, "npt_azim=0"), ({"unit": "r_mm"}, "unknown radial unit 'r_mm'"),
    ({"split": "full"}, "unknown pixel splitting 'full'"), ({"max_count": 0}, "max_count=0 counts"),
    ({"max_count": math.nan}, "max_count=nan"),
])
def test_empty_range_or_bins_raise_before_the_matrix_is_built(monkeypatch, kwargs, culprit):
    monkeypatch.setattr(corrected_integration, "pixel_splitting", _never_split)
    with raises_quickly(GeometryError, culprit):
        CorrectedIntegrator(tiny_poni(), **{"npt": 10, **kwargs})


def test_range_covered_only_by_masked_pixels_is_empty(monkeypatch):
    """Pixels beyond 4 mm of the beam masked: a range beyond them has no valid pixel."""
    monkeypatch.setattr(corrected_integration, "pixel_splitting", _never_split)
    poni = tiny_poni()
    r_mm = poni.integrator().array_from_unit(unit="r_mm")
    with raises_quickly(GeometryError, "radial range 8-20 1/nm .* valid pixels .* cover"):
        CorrectedIntegrator(poni, npt=10, radial_range=(8.0, 20.0), mask=r_mm > 4.0)


@pytest.mark.parametrize("npt, unit, culprit", [(0, "q_nm^-1", "npt=0"), (-1, "2th_deg", "npt=-1"),
                                                (10, "chi_deg", "unknown radial unit 'chi_deg'")])
def test_integrate_1d_refuses_empty_bins(npt, unit, culprit):
    with raises_quickly(GeometryError, culprit):
        integrate_1d(_counts(), tiny_poni(), npt=npt, unit=unit)


def test_standard_range_without_usable_bins_is_named():
    pattern = IntegrationResult(np.linspace(1, 10, 10), np.ones(10), np.full(10, 0.1), "q_nm^-1")
    with raises_quickly(GeometryError, "fewer than 3 usable bins of the standard between 20 and 30 1/nm"):
        standard_factor(pattern, np.array([0.0, 50.0]), np.array([1.0, 1.0]), (20, 30))


# --------------------------------------------------------------------------- monitors

@pytest.mark.parametrize("i0, it, culprit", [
    (0.0, 10.0, "I0=0.0"), (float("nan"), 1.0, "I0=nan"), (-3.0, 1.0, "I0=-3.0"), (None, 1.0, "I0=None"),
    ("1e5", 1.0, "I0='1e5'"), (100.0, -1.0, "It=-1.0"), (100.0, math.inf, "It=inf"), (100.0, 200.0, "transmission"),
])
def test_non_physical_transmission_is_named(i0, it, culprit):
    with raises_quickly(MonitorError, culprit):
        transmission(i0, it)


@pytest.mark.parametrize("air, culprit", [(0.0, "air transmission=0.0"), (1.5, "air transmission=1.5 is above 1"),
                                          (math.nan, "air transmission=nan")])
def test_non_physical_air_transmission_is_named(air, culprit):
    with raises_quickly(MonitorError, culprit):
        transmission(100.0, 50.0, air)
    with raises_quickly(MonitorError, culprit):
        Exposure(1e6, 5e5, 1.0, 1.0, air_transmission=air).factor()


@pytest.mark.parametrize("i0, exposure_s, calibration, culprit", [
    (1e6, 0.0, FluxCalibration(), "exposure=0.0 s"), (1e6, None, FluxCalibration(), "exposure=None s"),
    (1e6, math.nan, FluxCalibration(), "exposure=nan s"), (0.0, 1.0, FluxCalibration(), "I0=0.0"),
    (1e6, 1.0, FluxCalibration(slope=math.nan), "flux of nan ph/s"),
    (1e6, 1.0, FluxCalibration(slope=-1.0), r"flux of -1\.38e\+07 ph/s"),
])
def test_non_physical_flux_is_named(i0, exposure_s, calibration, culprit):
    with raises_quickly(MonitorError, culprit):
        calibration.flux(i0, exposure_s)


@pytest.mark.parametrize("i0, it, exposure_s, thickness_mm, error, culprit", [
    (None, 5e5, 1.0, 1.0, MonitorError, "I0=None"), (1e6, "x", 1.0, 1.0, MonitorError, "It='x'"),
    (1e6, np.float32(np.nan), 1.0, 1.0, MonitorError, "It=nan"), (1e6, 5e5, -1.0, 1.0, MonitorError, "exposure=-1.0"),
    (1e6, 5e5, 1.0, 0.0, MissingMetadataError, "thickness_mm=0.0 mm"),
    (1e6, 5e5, 1.0, math.nan, MissingMetadataError, "thickness_mm=nan"),
    (1e6, 5e5, 1.0, "1 mm", MissingMetadataError, "thickness_mm='1 mm'"),
])
def test_unusable_exposure_is_named(i0, it, exposure_s, thickness_mm, error, culprit):
    with raises_quickly(error, culprit):
        Exposure(i0, it, exposure_s, thickness_mm).factor()


@pytest.mark.parametrize("thickness_mm, culprit", [(0.0, "thickness_mm=0.0"), (-2.0, "thickness_mm=-2.0")])
def test_non_physical_background_thickness_is_named(thickness_mm, culprit):
    """The thickness that scales a background (Eq. S1) is checked like the sample's."""
    with raises_quickly(MissingMetadataError, culprit):
        Exposure(1e6, 5e5, 1.0, 1.0).factor(thickness_mm)


# --------------------------------------------------------------------------- documents

def h5_frames(path: Path, n: int = 4) -> str:
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.ones((n, *TINY_SHAPE), np.int32))
    return path.resolve().as_uri()


def documents(uri: str) -> dict[str, dict]:
    """A consistent set of documents of one two-event run, two frames per event."""
    return {
        "descriptor": {"uid": "desc-1", "name": "primary", "data_keys": {
            "det_image": {"dtype": "array", "shape": [2, *TINY_SHAPE], "external": "STREAM:", "source": "sim"},
            "det_x": {"dtype": "number", "shape": [], "source": "sim"}},
            "configuration": {"det": {"data": {"det_model": "Detector", "det_max_count": 1000,
                                               "det_acquire_time": 0.5}}}},
        "stream_resource": {"uid": "res-1", "data_key": "det_image", "uri": uri, "mimetype": "application/x-hdf5",
                            "parameters": {"dataset": "/entry/data/data"}},
        "stream_datum": {"uid": "sd-1", "stream_resource": "res-1", "descriptor": "desc-1",
                         "indices": {"start": 0, "stop": 2}, "seq_nums": {"start": 1, "stop": 3}},
        "event": {"uid": "ev-1", "descriptor": "desc-1", "seq_num": 1,
                  "data": {"det_x": 1.0, "det_y": 2.0, "det_z": 3.0}},
    }


STAGE_KEYS = {"x": "det_x", "y": "det_y", "distance": "det_z"}
#: Live order of the documents (replay sends the events first).
DOCUMENT_ORDER = ("descriptor", "stream_resource", "stream_datum", "event")


def collect(docs: dict[str, dict], names: tuple[str, ...] = DOCUMENT_ORDER) -> FrameRegistry:
    """A :class:`FrameRegistry` fed ``docs[name]`` for each of ``names``, in order."""
    collector = FrameRegistry()
    for name in names:
        getattr(collector, name)(docs[name])
    return collector


def test_consistent_documents_give_the_frames(tmp_path):
    docs = documents(h5_frames(tmp_path / "frames.h5"))
    (frame_event,) = collect(docs).ready("primary")
    assert frame_event.frames.shape == (2, *TINY_SHAPE)
    assert detector_config(docs["descriptor"], "det_image") == {"model": "Detector", "max_count": 1000.0,
                                                                "acquire_time": 0.5}
    assert stage_position(docs["event"], STAGE_KEYS).distance == 3.0


#: Marks a key to delete in :func:`changed`.
DELETE = object()


def changed(doc: dict, path: tuple[str, ...], value=DELETE) -> dict:
    """A copy of ``doc`` whose key at ``path`` holds ``value``, or is deleted."""
    out = json.loads(json.dumps(doc))
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


@pytest.mark.parametrize("name, path, value, culprit", [
    ("descriptor", ("uid",), DELETE, "descriptor has no 'uid' key"),
    ("descriptor", ("name",), DELETE, "descriptor desc-1 has no 'name' key"),
    ("event", ("descriptor",), DELETE, "event ev-1 has no 'descriptor' key"),
    ("event", ("seq_num",), DELETE, "event ev-1 has no 'seq_num' key"),
    ("event", ("seq_num",), "1", "event ev-1: 'seq_num' is '1', not an integer"),
    ("event", ("descriptor",), "desc-9", "event ev-1 names descriptor desc-9, which has not arrived"),
    ("stream_resource", ("uid",), DELETE, "stream_resource has no 'uid' key"),
    ("stream_resource", ("uri",), DELETE, "stream_resource res-1 has no 'uri' key"),
    ("stream_resource", ("parameters",), DELETE, "stream_resource res-1 has no 'parameters' key"),
    ("stream_resource", ("parameters", "dataset"), 5, "parameter 'dataset' is 5, not text"),
    ("stream_resource", ("data_key",), DELETE, "stream_resource res-1 has no 'data_key' key"),
    ("stream_datum", ("stream_resource",), DELETE, "stream_datum sd-1 has no 'stream_resource' key"),
    ("stream_datum", ("stream_resource",), "res-9", "stream_datum sd-1 names unknown stream_resource res-9"),
    ("stream_datum", ("indices",), DELETE, "stream_datum sd-1 has no 'indices' key"),
    ("stream_datum", ("indices", "stop"), DELETE, "stream_datum sd-1 indices has no 'stop' key"),
    ("stream_datum", ("seq_nums", "start"), None, "stream_datum sd-1 seq_nums: 'start' is None, not an integer"),
    ("stream_datum", ("seq_nums", "stop"), 9, "indices 0-2 and seq_nums 1-9 do not pair up"),
    ("stream_datum", ("descriptor",), DELETE, "stream_datum sd-1 has no 'descriptor' key"),
    ("descriptor", ("data_keys", "det_image", "external"), DELETE, "event ev-1 has no image 'det_image' in its data"),
    ("descriptor", ("data_keys",), DELETE, r"descriptor desc-1 \(stream 'primary'\) has no 'data_keys' key"),
    ("descriptor", ("data_keys", "det_image", "shape"), [],
     r"has no image data keys \[\] among \['det_image', 'det_x'"),
    ("descriptor", ("data_keys", "det_image", "shape"), [0, 16, 24], r"has shape \[0, 16, 24\]: expected"),
    ("descriptor", ("data_keys", "det_image", "shape"), "2x16x24", "has no image data keys"),
])
def test_malformed_documents_name_the_key(tmp_path, name, path, value, culprit):
    docs = documents(h5_frames(tmp_path / "frames.h5"))
    docs[name] = changed(docs[name], path, value)
    with raises_quickly(MissingMetadataError, culprit):
        collect(docs).ready("primary")


def test_frames_without_their_event_are_reported_as_runs(tmp_path):
    docs = documents(h5_frames(tmp_path / "frames.h5"))
    docs["stream_datum"] = changed(changed(docs["stream_datum"], ("indices", "stop"), 4), ("seq_nums", "stop"), 5)
    docs["event"] = changed(docs["event"], ("seq_num",), 2)
    collector = collect(docs)
    assert [fe.seq_num for fe in collector.ready("primary")] == [2]
    assert collector.unmatched_frames() == [("primary", 1, 1), ("primary", 3, 4)]


def test_a_bogus_huge_stream_datum_costs_nothing(tmp_path):
    """Spans stay ranges: announcing 10**30 frames neither hangs nor fills the memory."""
    docs = documents(h5_frames(tmp_path / "frames.h5"))
    docs["stream_datum"] = changed(changed(docs["stream_datum"], ("indices", "stop"), 10**30),
                                   ("seq_nums", "stop"), 10**30 + 1)
    start = time.perf_counter()
    collector = collect(docs)
    assert [fe.seq_num for fe in collector.ready("primary")] == [1]
    assert collector.unmatched_frames() == [("primary", 2, 10**30)]
    assert time.perf_counter() - start < WITHIN_S


def test_frames_not_in_a_local_file_are_named(tmp_path):
    docs = documents("http://host/frames.h5")
    with raises_quickly(CorruptFrameError, "frame URI 'http://host/frames.h5' is not a local file"):
        collect(docs)


def test_frames_announced_beyond_the_file_flag_their_event(tmp_path):
    docs = documents(h5_frames(tmp_path / "frames.h5", n=3))  # the second event needs frames 2-3
    docs["event"] = changed(docs["event"], ("seq_num",), 2)
    (flagged,) = collect(docs).ready("primary")
    assert flagged.frames is None
    assert re.search(r"frames\.h5:/entry/data/data holds 3 frames, event 1 needs frames 2-3", flagged.error)


@pytest.mark.parametrize("path, value, culprit", [
    (("configuration", "det", "data", "det_model"), 3, "configuration 'det': 'det_model' is 3, not text"),
    (("configuration", "det", "data", "det_max_count"), -1, "det_max_count=-1.0 counts"),
    (("configuration", "det", "data", "det_max_count"), "lots", "det_max_count='lots' counts is not a number"),
    (("configuration", "det", "data", "det_acquire_time"), 0, "det_acquire_time=0.0 s"),
    (("configuration", "det", "data", "det_acquire_time"), float("nan"), "det_acquire_time=nan s"),
])
def test_unusable_detector_configuration_is_named(path, value, culprit):
    descriptor = changed(documents("file:///x.h5")["descriptor"], path, value)
    with raises_quickly(MissingMetadataError, culprit):
        detector_config(descriptor, "det_image")


def test_unknown_counter_depth_and_model_are_none():
    descriptor = changed(documents("file:///x.h5")["descriptor"], ("configuration", "det", "data", "det_max_count"), 0)
    assert detector_config(descriptor, "det_image")["max_count"] is None
    assert frames_per_event(descriptor, "det_image") == 2
    bare = changed(descriptor, ("configuration",), DELETE)  # e.g. ophyd-async's simulated detector
    assert detector_config(bare, "det_image") == {"model": None, "max_count": None, "acquire_time": None}


@pytest.mark.parametrize("path, value, stage_keys, culprit", [
    (("data", "det_x"), DELETE, STAGE_KEYS, r"stage motor reading 'det_x' \(x\) missing from event ev-1"),
    (("data", "det_z"), None, STAGE_KEYS, r"stage motor reading det_z=None \(distance\) of event ev-1"),
    (("data", "det_y"), float("nan"), STAGE_KEYS, "det_y=nan"),
    (("data", "det_y"), "1.5", STAGE_KEYS, "det_y='1.5'"),
    (("data",), DELETE, STAGE_KEYS, "event ev-1 has no 'data' key"),
    (("uid",), "ev-1", {"x": "det_x", "y": "det_y"}, "stage_motors has no 'distance' key"),
])
def test_missing_stage_readings_are_named(path, value, stage_keys, culprit):
    event = changed(documents("file:///x.h5")["event"], path, value)
    with raises_quickly(MissingMetadataError, culprit):
        stage_position(event, stage_keys)


def test_dark_frames_are_refused_when_absent_or_mismatched():
    def dark(seq_num, shape):
        return FrameEvent("dark", seq_num, {}, {}, np.zeros((1, *shape)))
    with raises_quickly(MissingMetadataError, "no dark frames"):
        mean_dark([])
    with raises_quickly(ShapeMismatchError, r"seq_num 2 \(4, 5\)"):
        mean_dark([dark(1, (4, 4)), dark(2, (4, 5))])


def test_stream_datum_of_unknown_resource_is_named():
    with raises_quickly(MissingMetadataError, "names unknown stream_resource nope"):
        StreamFrames().span({"uid": "sd", "stream_resource": "nope"})


# --------------------------------------------------------------------------- catalog

def test_remote_catalog_uses_the_api_key_from_the_environment(catalog, monkeypatch):
    """open_catalog(uri) on a served Tiled: the key comes from TILED_API_KEY only;
    without it the server refuses."""
    base = catalog.uri.split("?")[0]
    key = catalog.uri.split("api_key=")[1]
    monkeypatch.setenv("TILED_API_KEY", key)
    remote = open_catalog(base)
    assert set(remote.client) >= {"raw", "processed"}
    monkeypatch.setenv("TILED_API_KEY", "wrong-key")
    with pytest.raises(Exception, match="401|Unauthorized|authenticat|API key"):
        open_catalog(base)
