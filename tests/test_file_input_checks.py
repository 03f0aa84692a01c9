"""Regression tests of the file commands' input checks, one per class of silent wrong
result found by testers: bad-pixel markers that made fake peaks, a PONI without a
detector shape that let a transposed frame through, a PONI in mm, a dark of another
exposure, a gain map in counts, an inverted mask, outputs into missing folders, a
reader that never returns."""

from __future__ import annotations

import re
import time
from pathlib import Path

import fabio
import numpy as np
import pytest
from conftest import realdata

from xrd_bluesky.cli import main
from xrd_bluesky.errors import CorruptFrameError, GeometryError
from xrd_bluesky.frames import reader
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky_bench.bad_inputs import good_files


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return good_files(tmp_path_factory.mktemp("good"))


def pattern(folder: Path, name: str) -> np.ndarray:
    return np.loadtxt(folder / f"{name}.xye", comments="#")


def test_marker_pixels_are_masked_by_default_and_make_no_fake_peak(good, tmp_path, capsys):
    """1 % of the pixels at 0xFFFFFFFF: the default saturation level masks them, so the
    pattern is the one of the clean frame with those pixels masked (to float rounding);
    told that no count saturates (--max-count 1e12) the markers swamp it."""
    frame = fabio.open(good.frame).data.astype(np.uint32)
    markers = np.zeros(frame.shape, bool)
    markers.ravel()[np.random.default_rng(3).choice(frame.size, frame.size // 100, replace=False)] = True
    fabio.tifimage.TifImage(data=np.where(markers, np.uint32(0xFFFFFFFF), frame)).write(str(tmp_path / "m.tif"))
    fabio.tifimage.TifImage(data=markers.astype(np.uint8)).write(str(tmp_path / "markers_mask.tif"))
    common = ["--poni", good.poni, "--unit", "2th_deg", "--npt", "1500"]
    assert main(["integrate", str(tmp_path / "m.tif"), *common, "-o", str(tmp_path / "default")]) == 0
    assert main(["integrate", good.frame, *common, "--mask", str(tmp_path / "markers_mask.tif"),
                 "-o", str(tmp_path / "clean")]) == 0
    assert main(["integrate", str(tmp_path / "m.tif"), *common, "--max-count", "1e12", "-o", str(tmp_path / "no")]) == 0
    ours, clean = pattern(tmp_path / "default", "m"), pattern(tmp_path / "clean", "ceo2")
    np.testing.assert_allclose(ours[:, 1], clean[:, 1], rtol=1e-5)
    assert pattern(tmp_path / "no", "m")[:, 1].max() > 1e3 * clean[:, 1].max()
    assert "# max_count: 4294967295" in (tmp_path / "default" / "m.xye").read_text()  # the level is in the header


def test_a_poni_without_detector_shape_needs_one_and_then_catches_a_transposed_frame(tmp_path, capsys):
    """Dioptas' version-1 PONI declares no detector shape: refused until --detector or
    --shape gives one; then the real frame goes through and its transpose does not."""
    frame, poni = realdata("dioptas_ceo2", "CeO2_Pilatus1M.tif"), realdata("dioptas_ceo2", "CeO2_Pilatus1M.poni")
    assert main(["integrate", str(frame), "--poni", str(poni), "-o", str(tmp_path / "a")]) == 2
    assert "declares no detector shape" in capsys.readouterr().err
    assert main(["integrate", str(frame), "--poni", str(poni), "--detector", "Pilatus1M",
                 "-o", str(tmp_path / "b")]) == 0
    transposed = tmp_path / "transposed.tif"
    fabio.tifimage.TifImage(data=np.ascontiguousarray(fabio.open(frame).data.T)).write(str(transposed))
    for option in (["--detector", "Pilatus1M"], ["--shape", "1043x981"]):
        assert main(["integrate", str(transposed), "--poni", str(poni), *option, "-o", str(tmp_path / "c")]) == 2
        assert "has shape (981, 1043)" in capsys.readouterr().err
    assert main(["integrate", str(frame), "--poni", str(poni), "--detector", "Eiger1M", "-o", str(tmp_path / "d")]) == 2
    assert "pixels of 75 x 75 um" in capsys.readouterr().err


def test_a_poni_in_millimetres_is_refused(good, tmp_path):
    text = Path(good.poni).read_text()
    p = Poni.read(good.poni)
    for key, value in (("Distance", p.dist), ("Poni1", p.poni1), ("Poni2", p.poni2)):
        text = text.replace(f"{key}: {value!r}", f"{key}: {value * 1e3!r}")
    (tmp_path / "mm.poni").write_text(text)
    with pytest.raises(GeometryError, match="in mm rather than m"):
        Poni.read(tmp_path / "mm.poni")


def test_darks_of_another_exposure_are_refused(good, tmp_path, capsys):
    """By level (a dark of 10x the exposure is brighter than the frame) and by the
    headers' exposure times; the right dark passes."""
    dark = fabio.open(good.dark).data
    fabio.tifimage.TifImage(data=dark * 10).write(str(tmp_path / "dark10.tif"))
    base = ["integrate", good.frame, "--poni", good.poni, "-o", str(tmp_path / "o")]
    assert main([*base, "--dark", str(tmp_path / "dark10.tif")]) == 2
    assert "the dark is brighter than the frame" in capsys.readouterr().err
    frame = fabio.open(good.frame).data
    fabio.edfimage.EdfImage(data=frame, header={"ExposureTime": "1.0"}).write(str(tmp_path / "f.edf"))
    fabio.edfimage.EdfImage(data=dark, header={"ExposureTime": "10.0"}).write(str(tmp_path / "d.edf"))
    assert main(["integrate", str(tmp_path / "f.edf"), "--poni", good.poni, "--dark", str(tmp_path / "d.edf"),
                 "-o", str(tmp_path / "o")]) == 2
    assert "was exposed 10 s" in capsys.readouterr().err
    assert main([*base, "--dark", good.dark]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_gain_map_in_counts_and_an_inverted_mask_are_refused(good, tmp_path, capsys):
    gain = fabio.open(good.gain).data
    mask = fabio.open(good.mask).data
    fabio.tifimage.TifImage(data=gain * 1000).write(str(tmp_path / "g.tif"))
    fabio.tifimage.TifImage(data=(mask == 0).astype(np.uint8)).write(str(tmp_path / "m.tif"))
    base = ["integrate", good.frame, "--poni", good.poni, "-o", str(tmp_path / "o")]
    assert main([*base, "--gain", str(tmp_path / "g.tif")]) == 2
    median = re.search(r"has a median of ([0-9.e+]+);", capsys.readouterr().err)
    assert median and 900 < float(median.group(1)) < 1100
    assert main([*base, "--mask", str(tmp_path / "m.tif")]) == 2
    assert "is it inverted?" in capsys.readouterr().err
    assert not (tmp_path / "o" / "ceo2.xye").exists()


def test_outputs_are_checked_before_computing_and_verified_after(good, tmp_path, capsys):
    missing = tmp_path / "missing" / "out.poni"
    assert main(["calibrate", good.frame, "--calibrant", "CeO2", "--energy-keV", "17", "--guess", good.poni,
                 "-o", str(missing)]) == 2
    assert f"folder {missing.parent} does not exist" in capsys.readouterr().err
    assert main(["gain-map", "--frames", good.gain_frames[0], "--poni", good.gain_ponis[0], "--frames",
                 good.gain_frames[1], "--poni", good.gain_ponis[1], "-o", str(tmp_path)]) == 2
    assert "is an existing directory" in capsys.readouterr().err


def test_a_reader_that_does_not_return_is_abandoned(tmp_path):
    """The timeout around every read (fabio once looped on a CBF cut in its header)."""
    path = tmp_path / "slow.tif"
    path.write_bytes(b"x")
    start = time.perf_counter()
    with pytest.raises(CorruptFrameError, match="did not finish within 0.2 s"):
        reader._with_timeout(lambda p: time.sleep(5), path, 0.2)
    assert time.perf_counter() - start < 2


def test_a_cbf_cut_in_its_header_is_refused_at_once(good, tmp_path):
    frame = fabio.open(good.frame).data
    fabio.cbfimage.CbfImage(data=frame).write(str(tmp_path / "whole.cbf"))
    (tmp_path / "cut.cbf").write_bytes((tmp_path / "whole.cbf").read_bytes()[:300])
    with pytest.raises(CorruptFrameError, match="no CBF binary section"):
        reader.read_image(tmp_path / "cut.cbf")
    assert reader.read_image(tmp_path / "whole.cbf").shape == frame.shape
