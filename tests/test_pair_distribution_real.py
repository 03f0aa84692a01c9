"""The PDF reduction on a real Ni pattern (NSLS-II XPD), held against the G(r) that
PDFgetX3 made from it with the same configuration, and its input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xraylib
from conftest import realdata

from xrd_bluesky.errors import ImplausibleInputError, SampleError, UsageError
from xrd_bluesky.science.pdf.pair_distribution import (
    PDFConfig,
    pdf_from_pattern,
    peak_positions,
)
from xrd_bluesky.science.scattering_factors import parse_composition

#: The configuration PDFgetX3 used (Ni_cfg_file.cfg).
NI = PDFConfig("Ni", rpoly=2.0, qmaxinst=25.0, qmin=0.0, qmax=24.0, rmin=0.0, rmax=60.0, rstep=0.01)


def _pattern():
    return np.loadtxt(realdata("pdfstream_ni", "Ni_chi_file.chi"), comments="#").T


def _pdfgetx3():
    text = realdata("pdfstream_ni", "Ni_gr_file.gr").read_text(encoding="utf-8").split("#### start data")[1]
    return np.loadtxt([line for line in text.splitlines() if line.strip() and not line.startswith("#")]).T


def test_ni_against_pdfgetx3():
    q, intensity = _pattern()
    r_ref, g_ref = _pdfgetx3()
    result = pdf_from_pattern(q, intensity, NI)
    assert np.allclose(result.r, r_ref)
    assert result.polynomial_degree == math.floor(25.0 * 2.0 / math.pi)
    # the .chi's known bad point is flagged, with its Q, and repaired
    assert len(result.flags) == 1 and "15.87" in result.flags[0]
    window = (result.r >= 1.5) & (result.r <= 30.0)
    pearson = np.corrcoef(result.gr[window], g_ref[window])[0, 1]
    # Measured 0.977. Two further detector glitches of the .chi (4-5 point dips at Q = 19.0 and 21.1 1/A) and
    # a Q-dependent normalisation that PDFgetX3 does differently explain the rest (closing note of the issue).
    assert pearson > 0.975
    reference = peak_positions(r_ref, g_ref, min_height=1.0)
    reference = reference[reference > 1.5][:10]
    ours = peak_positions(result.r, result.gr)
    errors = [ours[np.argmin(np.abs(ours - p))] - p for p in reference]
    # measured: the first peak 0.028 A long, the other nine within 0.021 A
    assert max(abs(e) for e in errors) < 0.035
    assert abs(errors[0]) < 0.035 and sorted(abs(e) for e in errors)[8] < 0.022
    # fcc Ni: the first neighbour at a / sqrt(2) with the XPD cell (PDFgetX3's peak gives a = 3.517 A)
    assert ours[np.argmin(np.abs(ours - 2.49))] == pytest.approx(2.49, abs=0.04)


def test_the_spike_does_not_ripple_g():
    """Without the repair the one bad point would add a sine of period 2 pi / 15.87 A to G(r)."""
    q, intensity = _pattern()
    repaired = pdf_from_pattern(q, intensity, NI)
    k = int(np.argmin(np.abs(q - 15.872)))
    clean = intensity.copy()
    clean[k] = 0.5 * (clean[k - 1] + clean[k + 1])
    assert np.max(np.abs(repaired.gr - pdf_from_pattern(q, clean, NI).gr)) < 1e-9
    hot = intensity.copy()
    hot[k] *= 50
    flagged = pdf_from_pattern(q, hot, NI)
    assert "15.87" in flagged.flags[0] and np.max(np.abs(flagged.gr - repaired.gr)) < 1e-9


def test_named_errors():
    q, intensity = _pattern()
    with pytest.raises(ImplausibleInputError, match="qmaxinst = 35 1/A is beyond the data, which end at Q = 31.54"):
        pdf_from_pattern(q, intensity, NI.updated(qmax=35.0, qmaxinst=35.0))
    with pytest.raises(ImplausibleInputError, match="background x bgscale = 2 is stronger than the sample"):
        pdf_from_pattern(q, intensity, NI.updated(bgscale=2.0), background=(q, intensity))
    with pytest.raises(SampleError, match="unknown element 'Xx'"):
        pdf_from_pattern(q, intensity, NI.updated(composition="NiXx"))
    with pytest.raises(UsageError, match="qmax = 24 1/A is above qmaxinst = 20"):
        pdf_from_pattern(q, intensity, NI.updated(qmaxinst=20.0))
    with pytest.raises(ImplausibleInputError, match="Q does not increase"):
        pdf_from_pattern(q[::-1], intensity[::-1], NI)
    with pytest.raises(UsageError, match="wavelength"):
        pdf_from_pattern(q, intensity, NI.updated(dataformat="twotheta"))


def test_twotheta_and_nm_input_give_the_same_g():
    q, intensity = _pattern()
    wavelength = 0.1671
    tth = np.degrees(2 * np.arcsin(q * wavelength / (4 * np.pi)))
    in_q = pdf_from_pattern(q, intensity, NI)
    in_tth = pdf_from_pattern(tth, intensity, NI.updated(dataformat="twotheta", wavelength=wavelength))
    in_nm = pdf_from_pattern(q * 10, intensity, NI.updated(dataformat="Qnm"))
    # the 2theta -> Q round trip differs in the last bits, amplified by the correction's least squares
    assert np.allclose(in_tth.gr, in_q.gr, atol=1e-7 * np.abs(in_q.gr).max())
    assert np.allclose(in_nm.gr, in_q.gr, atol=1e-9 * np.abs(in_q.gr).max())


def test_composition_as_pdfgetx3_reads_it():
    forms = ["PbTi0.5Zr0.5O3", "Pb (TiZr)0.5 O3", "Pb 1 (Ti Zr) 1/2 O 3"]
    assert {parse_composition(f).counts for f in forms} == {(("Pb", 1.0), ("Ti", 0.5), ("Zr", 0.5), ("O", 3.0))}
    assert parse_composition("CH3 CH3").counts == (("C", 2.0), ("H", 6.0))
    nacl = parse_composition("NaCl")
    f_mean, f2_mean = nacl.mean_form_factors(np.array([0.0, 10.0]))
    assert f_mean[0] == pytest.approx(14.0, abs=0.05)  # (11 + 17) / 2 electrons at Q = 0
    assert f2_mean[0] == pytest.approx((11**2 + 17**2) / 2, rel=2e-3)
    # the tabulated Compton term against xraylib itself, and towards Z = 28 electrons at high Q
    q = np.array([0.5, 7.3, 24.1, 95.0])
    expected = [xraylib.SF_Compt(28, float(v) / (4 * np.pi)) for v in q]
    assert np.allclose(parse_composition("Ni").incoherent(q), expected, rtol=1e-3)
    assert expected[-1] == pytest.approx(28.0, abs=0.3)


def test_empty_bins_left_out_and_a_gap_named():
    q, intensity = _pattern()
    holes = intensity.copy()
    holes[[100, 400]] = np.nan  # empty bins: left out silently
    assert pdf_from_pattern(q, holes, NI).flags == pdf_from_pattern(q, intensity, NI).flags
    gap = (q > 10.0) & (q < 11.0)
    holes[gap] = np.nan
    flags = pdf_from_pattern(q, holes, NI).flags
    assert "no data over Q 9.983-11.003 1/A (interpolated)" in flags
