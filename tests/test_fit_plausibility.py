"""Never a silent wrong result: a fit that did not fit is not a success (non-finite
window, no move from the guess, noise, a window off the data or cutting the peak), and
``fit-peaks`` reads back every pattern format ``xrd-bluesky integrate`` writes, names
the radial unit, refuses malformed files with a domain error naming them, and exits 1
when a fit failed."""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xrd_bluesky.cli import main
from xrd_bluesky.cli.fit_peaks import read_pattern
from xrd_bluesky.cli.integrate import write_chi, write_xye
from xrd_bluesky.errors import CorruptFrameError, XRDBlueskyError
from xrd_bluesky.science.reduction.integration import UNITS, IntegrationResult
from xrd_bluesky.science.reduction.peak_fitting import (
    FOUR_LN2,
    fit_peak,
    levenberg_marquardt,
)

#: True centre and FWHM of the synthetic peak, its radial range and the fitted window, per unit.
TRUE = {"2th_deg": {"centre": 10.0137, "fwhm": 0.06, "radial": (8.0, 12.0), "window": (9.6, 10.4)},
        "q_nm^-1": {"centre": 7.2431, "fwhm": 0.05, "radial": (5.0, 9.0), "window": (6.9, 7.6)}}
#: Peak height and background (counts per bin).
HEIGHT, BACKGROUND = 400.0, 300.0


def integration(unit: str = "2th_deg", seed: int = 0) -> IntegrationResult:
    """A Gaussian on a flat background with Poisson noise, one bin without valid pixel."""
    truth = TRUE[unit]
    rng = np.random.default_rng(seed)
    radial = np.linspace(*truth["radial"], 800)
    counts = rng.poisson(HEIGHT * np.exp(-FOUR_LN2 * ((radial - truth["centre"]) / truth["fwhm"]) ** 2)
                         + BACKGROUND).astype(float)
    intensity = counts.copy()
    intensity[5] = np.nan
    return IntegrationResult(radial, intensity, np.sqrt(np.maximum(counts, 1.0)), unit)


def written(path: Path, unit: str = "2th_deg", seed: int = 0) -> Path:
    """``path`` written by the ``integrate`` writer of its suffix."""
    pattern = integration(unit, seed)
    if path.suffix == ".chi":
        write_chi(path, pattern, "synthetic Gaussian")
    else:
        write_xye(path, pattern, {"sample": "synthetic"}, wavelength_m=4e-11)
    return path


def noisy_peak(rng, x, centre=10.03, fwhm=0.12, height=400.0, background=60.0):
    mu = height * np.exp(-FOUR_LN2 * ((x - centre) / fwhm) ** 2) + background
    y = rng.poisson(mu).astype(float)
    return y, np.sqrt(np.maximum(y, 1.0))


# --------------------------------------------------------------------------- real integrations read back

@pytest.mark.parametrize("unit", sorted(TRUE))
@pytest.mark.parametrize("suffix", [".xye", ".chi"])
def test_integrated_pattern_read_back_gives_the_true_centre(tmp_path, capsys, unit, suffix):
    path = written(tmp_path / f"pattern{suffix}", unit)
    out = tmp_path / "peaks.csv"
    lo, hi = TRUE[unit]["window"]
    assert main(["fit-peaks", str(path), "--peak", f"{lo}:{hi}", "-o", str(out)]) == 0
    (row,) = csv.DictReader(out.open())
    assert row["success"] == "True", row["reason"]
    assert abs(float(row["centre"]) - TRUE[unit]["centre"]) < 3 * float(row["centre_sigma"])
    assert abs(float(row["fwhm"]) - TRUE[unit]["fwhm"]) < 3 * float(row["fwhm_sigma"])
    assert f"radial unit: {unit} ({UNITS[unit]})" in capsys.readouterr().out
    assert row["radial_unit"] == f"{unit} ({UNITS[unit]})"


def test_chi_is_recognised_by_content_and_xy_gsas_styles_are_read(tmp_path):
    chi = read_pattern(written(tmp_path / "p.chi").rename(tmp_path / "p.txt"))
    assert chi.unit == "2th_deg (deg)" and chi.sigma is None and chi.radial.size == 799
    rows = "".join(f"{x:.4f} {100 + x:.3f}\n" for x in np.linspace(12.0, 8.0, 50))  # decreasing radial
    (tmp_path / "gsas.dat").write_text("BANK 1 50 50 CONST 800 5 0 0 FXYE\nCeO2 at 17 keV\n" + rows)
    gsas = read_pattern(tmp_path / "gsas.dat")
    assert gsas.sigma is None and np.all(np.diff(gsas.radial) > 0) and gsas.intensity[0] == pytest.approx(108.0)
    assert gsas.unit.startswith("unknown")


@pytest.mark.parametrize("content, culprit", [
    ("", "no rows of numbers .it is empty"), ("# only a comment\n\n", "it is empty"),
    ("title\n2-Theta Angle (Degrees)\nIntensity\n 5\n1 2\n2 3\n3 4\n", "declares 5 points but holds 3 rows"),
    ("1 2 3\n2 3 4\nnan? 4 5\n4 5 6\n", "line 3.*not a row of numbers"),
    ("1 2 3\n2 3 4\n3 4\n", "line 3 has 2 columns"),
    ("1 2\n2 3\n", r"3 rows, has shape \(2, 2\)"),
    ("1 2\nnan 3\n3 4\n", "radial value nan in data row 2 is not finite"),
    ("1 2\n3 3\n2 4\n", "not strictly monotonic: data row 3"),
    ("1 2\n1 3\n2 4\n", "not strictly monotonic: data row 2"),
    ("x y\na b\n", "'x' is not a number"),
])
def test_malformed_pattern_is_refused_naming_the_file(tmp_path, content, culprit):
    path = tmp_path / "pattern.dat"
    path.write_text(content)
    with pytest.raises(CorruptFrameError, match=rf"pattern\.dat.*{culprit}"):
        read_pattern(path)


# --------------------------------------------------------------------------- windows

@pytest.mark.parametrize("window", ["9.5:inf", "-inf:10", "nan:10.5", "9.5:nan"])
def test_non_finite_window_is_a_usage_error(tmp_path, capsys, window):
    path = written(tmp_path / "p.xye")
    with pytest.raises(SystemExit) as exit_:
        main(["fit-peaks", str(path), f"--peak={window}", "-o", str(tmp_path / "peaks.csv")])
    assert exit_.value.code == 2 and f"peak window {window!r} has a non-finite bound" in capsys.readouterr().err
    assert not (tmp_path / "peaks.csv").exists()


@pytest.mark.parametrize("window", [(9.5, math.inf), (-math.inf, 10.5), (math.nan, 10.5)])
def test_fit_peak_refuses_a_non_finite_window(window):
    x = np.linspace(9.0, 11.0, 200)
    y, s = noisy_peak(np.random.default_rng(4), x)
    r = fit_peak(x, y, window, sigma=s)
    assert not r.success and "non-finite bound" in r.reason and math.isnan(r.centre)


def test_a_fit_that_cannot_move_from_its_guess_reports_no_step():
    """The mechanism of the ``9.5:inf`` report: an infinite window midpoint makes the
    model NaN, no step lowers chi2, and the optimizer returns its initial guess."""
    x = np.linspace(9.0, 11.0, 200)
    y, s = noisy_peak(np.random.default_rng(4), x)
    p0 = np.array([10.0, 0.1, 300.0, 60.0])
    p, _, chi2, _, steps = levenberg_marquardt(x, y, 1 / s**2, p0, 0, 1, math.inf)
    assert steps == 0 and np.array_equal(p, p0) and math.isnan(chi2)
    assert levenberg_marquardt(x, y, 1 / s**2, p0, 0, 1, 10.0)[4] > 0


# --------------------------------------------------------------------------- implausible fits

@pytest.mark.parametrize("weighted", [True, False])
def test_a_window_over_noise_or_a_flat_background_is_never_a_success(weighted):
    x = np.linspace(9.0, 11.0, 200)
    for seed in range(200):
        y = np.random.default_rng(seed).poisson(60.0, x.size).astype(float)
        r = fit_peak(x, y, (9.2, 10.8), sigma=np.sqrt(np.maximum(y, 1.0)) if weighted else None)
        assert not r.success and "window 9.2-10.8" in r.reason, (seed, r)
    flat = fit_peak(x, np.full(x.size, 60.0), (9.2, 10.8), sigma=np.full(x.size, 60**0.5) if weighted else None)
    assert not flat.success and "no peak" in flat.reason


def test_a_window_outside_the_data_names_the_data_range(tmp_path, capsys):
    path = written(tmp_path / "p.xye")
    out = tmp_path / "peaks.csv"
    assert main(["fit-peaks", str(path), "--peak", "9.6:10.4", "--peak", "13:14", "-o", str(out)]) == 1
    ok, off = csv.DictReader(out.open())
    assert ok["success"] == "True" and off["success"] == "False" and off["centre"] == "nan"
    assert "window 13-14 does not overlap the data's radial range 8-12" in off["reason"]
    assert "does not overlap the data's radial range 8-12" in capsys.readouterr().out


@pytest.mark.parametrize("beyond", [0.0, 0.02, 0.05])
def test_a_peak_cut_by_the_window_edge_is_not_a_success(beyond):
    """The peak's centre at or beyond the window's upper edge (FWHM 0.12): only its
    flank is inside; 100 noisy repeats."""
    x = np.linspace(9.0, 11.0, 200)
    rng = np.random.default_rng(6)
    for _ in range(100):
        y, s = noisy_peak(rng, x, centre=10.5 + beyond)
        r = fit_peak(x, y, (9.5, 10.5), sigma=s)
        assert not r.success and "window 9.5-10.5" in r.reason, r


def test_a_window_narrower_than_the_peak_is_not_a_success():
    x = np.linspace(9.0, 11.0, 400)
    y, s = noisy_peak(np.random.default_rng(7), x, height=4000.0)
    r = fit_peak(x, y, (9.99, 10.07), sigma=s)
    assert not r.success and "window 9.99-10.07" in r.reason


def test_real_peaks_stay_a_success():
    """Criteria not so strict that noisy real peaks fail: 150 repeats per model of a
    weak peak (height 80 on a background of 200 counts: under 6 sigma per point at its
    top), at least 97 % a success with the centre within 4 sigma of the truth."""
    x = np.linspace(9.0, 11.0, 200)
    rng = np.random.default_rng(8)
    for model in ("gaussian", "pseudo-voigt"):
        fits = []
        for _ in range(150):
            y, s = noisy_peak(rng, x, height=80.0, background=200.0)
            fits.append(fit_peak(x, y, (9.5, 10.5), sigma=s, model=model))
        good = [f for f in fits if f.success and abs(f.centre - 10.03) < 4 * f.centre_sigma]
        assert len(good) >= 146, [f.reason for f in fits if not f.success][:5]


# --------------------------------------------------------------------------- command

def test_exit_status_output_checks_and_units(tmp_path, capsys):
    xye, chi_q = written(tmp_path / "p.xye"), written(tmp_path / "q.chi", "q_nm^-1")
    assert main(["fit-peaks", str(xye), "--peak", "9.6:10.4", "-o", str(tmp_path / "a.csv")]) == 0
    assert main(["fit-peaks", str(xye), "--peak", "9.6:10.4", "--peak", "11:11.5", "-o", str(tmp_path / "b.csv")]) == 1
    assert "1 of 2 fits FAILED" in capsys.readouterr().err and len((tmp_path / "b.csv").read_text().splitlines()) == 3
    assert main(["fit-peaks", str(xye), "--peak", "9.6:10.4", "-o", str(tmp_path / "missing" / "c.csv")]) == 2
    captured = capsys.readouterr()
    assert "missing" in captured.err and "9.6000" not in captured.out  # refused before fitting
    assert main(["fit-peaks", str(xye), str(chi_q), "--peak", "9.6:10.4", "-o", str(tmp_path / "d.csv")]) == 2
    err = capsys.readouterr().err
    assert "p.xye is in 2th_deg (deg)" in err and "q.chi is in q_nm^-1 (1/nm)" in err


# --------------------------------------------------------------------------- generated malformed files

def _good_rows(draw) -> list[str]:
    n = draw(st.integers(0, 60), label="rows")
    x = np.linspace(9.0, 11.0, n)
    y = 400.0 * np.exp(-FOUR_LN2 * ((x - 10.03) / 0.12) ** 2) + 60.0
    columns = draw(st.integers(1, 4), label="columns")
    return [" ".join(f"{v:.6g}" for v in (a, b, math.sqrt(b), 1.0)[:columns]) for a, b in zip(x, y)]


@st.composite
def malformed_patterns(draw) -> bytes:
    """A pattern file as written, then damaged: random bytes, a chi or GSAS header with
    any count, truncated or cut rows, NaN, inf or text in any column, shuffled or
    duplicated rows."""
    if draw(st.booleans(), label="random bytes"):
        return draw(st.binary(max_size=300))
    rows = _good_rows(draw)
    header = draw(st.sampled_from(["", "# radial: 2th_deg (deg)\n", "BANK 1 FXYE\n",
                                   f"t\n2-Theta Angle (Degrees)\nIntensity\n {draw(st.integers(0, 70))}\n"]))
    for _ in range(draw(st.integers(0, 3), label="damages")):
        if not rows:
            break
        i = draw(st.integers(0, len(rows) - 1))
        damage = draw(st.sampled_from(["truncate", "value", "shuffle", "duplicate", "delete"]))
        if damage == "truncate":
            rows[i] = rows[i][:draw(st.integers(0, len(rows[i])))]
        elif damage == "value":
            words = rows[i].split() or [""]
            words[draw(st.integers(0, len(words) - 1))] = draw(st.sampled_from(["nan", "inf", "-inf", "1e999", "x",
                                                                                 "", "#", "0", "-1"]))
            rows[i] = " ".join(words)
        elif damage == "shuffle":
            rows = draw(st.permutations(rows))
        elif damage == "duplicate":
            rows.insert(i, rows[i])
        else:
            del rows[i]
    text = header + "\n".join(rows) + "\n"
    return text[:draw(st.integers(0, len(text)))].encode() if draw(st.booleans(), label="cut") else text.encode()


@settings(deadline=1000, max_examples=300)
@given(content=malformed_patterns(), suffix=st.sampled_from([".xye", ".chi", ".dat"]))
def test_malformed_pattern_files_give_a_domain_error_or_a_result(content, suffix):
    """Read and fitted through the command: a domain error naming the file (exit 2) or
    a table (exit 0 or 1, a failure being flagged) — never another exception."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"pattern{suffix}"
        path.write_bytes(content)
        try:
            pattern = read_pattern(path)
        except XRDBlueskyError as exc:
            assert f"pattern{suffix}" in str(exc)
        else:
            assert np.all(np.diff(pattern.radial) > 0) and pattern.radial.size == pattern.intensity.size >= 3
            r = fit_peak(pattern.radial, pattern.intensity, (9.5, 10.5), sigma=pattern.sigma)
            assert (r.success and 9.5 <= r.centre <= 10.5) or (not r.success and r.reason and math.isnan(r.centre))
        assert main(["fit-peaks", str(path), "--peak", "9.5:10.5", "-o", str(Path(folder) / "peaks.csv")]) in (0, 1, 2)
