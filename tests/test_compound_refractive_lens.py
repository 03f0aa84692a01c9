"""Compound refractive lens: delta from xraylib and the thin-lens focal length
f = R / (2 N delta); bad lenses are named errors."""

from __future__ import annotations

import pytest
import xraylib

from xrd_bluesky.errors import GeometryError, UsageError
from xrd_bluesky.science.dfxrm.compound_refractive_lens import (
    LENS_MATERIALS,
    focal_length_m,
    refractive_decrement,
)


def test_beryllium_at_17_keV():
    """delta(Be, 17 keV) ~ 1.2e-6; R = 50 um, N = 30 within 1 % of R / (2 N delta) from xraylib."""
    delta = refractive_decrement("Be", 17.0)
    assert delta == pytest.approx(1.2e-6, rel=0.05)
    expected_m = 50e-6 / (2 * 30 * (1.0 - xraylib.Refractive_Index_Re("Be", 17.0, xraylib.ElementDensity(4))))
    assert focal_length_m(50.0, 30, "Be", 17.0) == pytest.approx(expected_m, rel=0.01)
    assert 0.6 < expected_m < 0.8


def test_focal_length_scales_as_r_over_n_delta():
    """f grows with R and E^2 (delta ~ 1/E^2 away from edges), shrinks with N and density."""
    f = focal_length_m(50.0, 30, "Be", 17.0)
    assert focal_length_m(100.0, 30, "Be", 17.0) == pytest.approx(2 * f, rel=1e-12)
    assert focal_length_m(50.0, 60, "Be", 17.0) == pytest.approx(f / 2, rel=1e-12)
    assert focal_length_m(50.0, 30, "Be", 34.0) == pytest.approx(4 * f, rel=0.01)
    formula, density = LENS_MATERIALS["diamond (C)"]
    assert focal_length_m(50.0, 30, formula, 17.0, density) < f  # denser: larger delta


@pytest.mark.parametrize("call, error, words", [
    (lambda: focal_length_m(0.0, 30, "Be", 17.0), GeometryError, "radius"),
    (lambda: focal_length_m(50.0, 0, "Be", 17.0), GeometryError, "number of lenses"),
    (lambda: focal_length_m(50.0, 2.5, "Be", 17.0), GeometryError, "whole number"),
    (lambda: refractive_decrement("Be", -1.0), GeometryError, "photon energy"),
    (lambda: refractive_decrement("Xx", 17.0), UsageError, "'Xx'"),
    (lambda: refractive_decrement("SiO2", 17.0), UsageError, "density"),
    (lambda: refractive_decrement("Be", 17.0, 0.0), GeometryError, "density"),
])
def test_bad_lenses_are_named_errors(call, error, words):
    with pytest.raises(error, match=words):
        call()
