"""Generated malformed inputs through the commands themselves (``xrd_bluesky.cli.main``):
PONI files of any numbers, frame files cut or corrupted anywhere, options of any text.
Every answer is a named error (exit 2 or 1, a domain error's line on stderr) or a
result that is right: a geometry accepted only when it is plausible, a pattern whose
strongest peak is the calibrant's strongest ring. Never a traceback or an unexpected
error."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from xrd_bluesky.cli import main
from xrd_bluesky.science.geometry import (
    DISTANCE_RANGE_M,
    MAX_PONI_DETECTOR_SIZES,
    WAVELENGTH_RANGE_A,
    Poni,
)
from xrd_bluesky_bench.bad_inputs import ENERGY_KEV, good_files

#: Few examples per command (a command run costs 0.1-1 s); the corpus test covers the named cases.
FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return good_files(tmp_path_factory.mktemp("good"))


def answer(argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of the command ``argv``; an exception out of ``main`` (other
    than argparse's exit) fails the test, as does an unexpected error."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
    text = err.getvalue()
    assert ": unexpected " not in text, text
    if status != 0:
        assert status in (1, 2) and text.strip(), (status, text)
    if currently_in_test_context():
        event(text.strip().splitlines()[-1].split(":")[1].strip()[:40] if status else "accepted")
    return status, text


def strongest_peak_2theta(xye: Path) -> tuple[float, float]:
    """2theta (deg) of the strongest bin and the bins' width (deg)."""
    data = np.loadtxt(xye, comments="#")
    return float(data[np.argmax(data[:, 1]), 0]), float(np.median(np.diff(data[:, 0])))


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e3, 1e3),
                    st.sampled_from([0.0, -0.0, 1e-12, 1e12]))


#: Plausible PONI values, each of which a generated PONI may replace with any number.
PLAUSIBLE = {"Distance": st.floats(0.05, 2.0), "Poni1": st.floats(-0.5, 0.5), "Poni2": st.floats(-0.5, 0.5),
             "Rot1": st.floats(-0.3, 0.3), "Wavelength": st.floats(0.3e-10, 1.5e-10)}


@FEW
@given(values=st.fixed_dictionaries(PLAUSIBLE), spoilt=st.dictionaries(st.sampled_from(sorted(PLAUSIBLE)), numbers))
def test_integrate_accepts_only_plausible_ponis(good, tmp_path, values, spoilt):
    values = {**values, **spoilt}
    dist, poni1, poni2, rot1, wavelength = (values[k] for k in ("Distance", "Poni1", "Poni2", "Rot1", "Wavelength"))
    text = Path(good.poni).read_text().splitlines()
    lines = [f"{k}: {values[k]!r}" if (k := line.split(":", 1)[0].strip()) in values else line for line in text]
    poni = tmp_path / "generated.poni"
    poni.write_text("\n".join(lines) + "\n")
    status, _ = answer(["integrate", good.frame, "--poni", str(poni), "--npt", "300", "--unit", "2th_deg",
                        "-o", str(tmp_path / "out")])
    if status == 0:
        geometry = Poni.read(poni)
        det = geometry.detector_model()
        size = math.hypot(det.shape[0] * det.pixel1, det.shape[1] * det.pixel2)
        assert DISTANCE_RANGE_M[0] <= dist <= DISTANCE_RANGE_M[1]
        assert WAVELENGTH_RANGE_A[0] <= wavelength * 1e10 <= WAVELENGTH_RANGE_A[1]
        assert math.hypot(poni1, poni2) <= (MAX_PONI_DETECTOR_SIZES + 1) * size
        assert abs(rot1) <= 2 * math.pi


@FEW
@given(cut=st.floats(0.0, 0.999), flips=st.lists(st.integers(0, 10_000), max_size=4))
def test_integrate_refuses_cut_frames_and_reads_flipped_ones_right(good, tmp_path, cut, flips):
    """A frame file cut anywhere is refused by name; bytes flipped in its header or data
    give a named error or a pattern (a valid file with other counts)."""
    raw = bytearray(Path(good.frame).read_bytes())
    for i in flips:
        raw[i] ^= 0xFF
    frame = tmp_path / "f.tif"
    frame.write_bytes(bytes(raw[: int(len(raw) * cut)]))
    status, text = answer(["integrate", str(frame), "--poni", good.poni, "--npt", "300", "-o", str(tmp_path / "o")])
    assert status == 2, text
    frame.write_bytes(bytes(raw))
    answer(["integrate", str(frame), "--poni", good.poni, "--npt", "300", "-o", str(tmp_path / "o")])


options = st.one_of(st.text(max_size=12), st.integers(-10**9, 10**9).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))


@FEW
@given(npt=st.one_of(options, st.integers(0, 200_000).map(str)),
       unit=st.one_of(options, st.sampled_from(["2th_deg", "q_nm^-1", "q_A^-1"])),
       polarization=st.one_of(options, st.floats(-1.5, 1.5).map(repr)),
       max_count=st.one_of(options, st.floats(-10, 1e7).map(repr)))
def test_integrate_options(good, tmp_path, npt, unit, polarization, max_count):
    """Any option text: a usage error, or a pattern whose strongest peak is CeO2's 111
    ring, within 0.1 deg plus a bin (bins wider than the rings' spacing merge rings); its place
    does not depend on the polarization, nor on the saturation level unless the answer says
    that saturated pixels were masked (a level below the rings' counts clips them)."""
    status, text = answer(["integrate", good.frame, "--poni", good.poni, "--dark", good.dark, "--npt", npt,
                           "--unit", "2th_deg", "--polarization", polarization, "--max-count", max_count,
                           "-o", str(tmp_path / "o")])
    if status == 0:
        assert 10 <= int(npt) <= 100_000
        # bins wider than the rings' spacing merge rings: the strongest bin then lies within a bin of 111
        centre, width = strongest_peak_2theta(tmp_path / "o" / "ceo2.xye")
        assert abs(centre - REFERENCE["111"]) < 0.1 + width or "saturated" in text, (centre, width, text)
    answer(["integrate", good.frame, "--poni", good.poni, "--unit", unit, "--npt", "300", "-o", str(tmp_path / "u")])


@pytest.mark.parametrize("max_count", [188, 1500, 5000, 30000])
def test_integrate_says_which_rings_saturation_clips(good, tmp_path, max_count):
    """The good frame's background is about 200 counts and its 111 ring peaks at about
    20,000. A saturation level at the background is refused; one inside a ring's counts is
    accepted with a warning naming that ring's 2theta band (111 at 13.40 deg); one above
    every count changes nothing."""
    status, text = answer(["integrate", good.frame, "--poni", good.poni, "--dark", good.dark, "--npt", "2000",
                           "--unit", "2th_deg", "--max-count", str(max_count), "-o", str(tmp_path / "o")])
    if max_count == 188:
        assert status == 2 and "ImplausibleInputError" in text and "median is 202" in text, text
        return
    assert status == 0, text
    centre, _ = strongest_peak_2theta(tmp_path / "o" / "ceo2.xye")
    if max_count == 30000:
        assert "saturated" not in text and abs(centre - REFERENCE["111"]) < 0.05, (centre, text)
    else:
        assert "of the pixels of the rings at 2theta 13.3-13.5" in text, text


#: CeO2 111 ring at the corpus energy (deg): d = 3.1244 A.
REFERENCE = {"111": math.degrees(2 * math.asin(12.398419843320026 / ENERGY_KEV / (2 * 3.1244)))}


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(energy=st.one_of(options, st.floats(16.0, 18.0).map(repr)))
def test_calibrate_energies(good, tmp_path, energy):
    """Any energy text: a usage error, a failed calibration, or a geometry at the
    corpus energy's wavelength (the only one accepted without a complaint is the true one
    within the degeneracy of energy and distance that a single frame leaves)."""
    status, text = answer(["calibrate", good.frame, "--calibrant", "CeO2", "--dark", good.dark, "--energy-keV",
                           energy, "--guess", good.poni, "-o", str(tmp_path / "c.poni")])
    if status == 0:
        assert (tmp_path / "c.poni").is_file()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 0.999))
def test_gain_map_refuses_a_cut_frame(good, tmp_path, cut):
    raw = Path(good.gain_frames[1]).read_bytes()
    frame = tmp_path / "g.tif"
    frame.write_bytes(raw[: int(len(raw) * cut)])
    status, text = answer(["gain-map", "--frames", good.gain_frames[0], "--poni", good.gain_ponis[0],
                           "--frames", str(frame), "--poni", good.gain_ponis[1], "-o", str(tmp_path / "g.tif.out.tif")])
    assert status == 2, text


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(energy=st.one_of(options, st.floats(0.5, 70.0).map(repr)),
       thickness=st.one_of(options, st.floats(-1, 1e3).map(repr)),
       low=st.one_of(options, st.floats(-10, 50).map(repr)))
def test_dfxrm_options(tmp_path, energy, thickness, low):
    status, _ = answer(["dfxrm", "Si", "--energy-keV", energy, "--thickness-um", thickness,
                        "--two-theta-range", low, "40", "-o", str(tmp_path / "d")])
    if status == 0:
        assert 1.0 <= float(energy) <= 60.0 and float(thickness) > 0
        assert (tmp_path / "d" / "Si_dfxrm.pdf").is_file()
