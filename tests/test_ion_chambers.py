"""Ion chambers follow flux, exposure and the sample's xraylib transmission."""

import math

import numpy as np
import pytest
import xraylib

from xrd_bluesky.errors import MonitorError
from xrd_bluesky.science.reduction.monitors import (
    AIR_TRANSMISSION,
    FluxCalibration,
    transmission,
)


@pytest.mark.parametrize("slot", ["water", "glass", "empty"])
def test_counts_follow_flux_and_transmission(beamline, slot):
    bl = beamline
    bl.sample_changer.slot.put(slot)
    bl.detector.acquire_time.put(2.0)
    bl.source.flux.put(3.0e11)
    i0, it = [], []
    for _ in range(20):
        bl.i0.trigger(), bl.it.trigger()
        i0.append(bl.i0.counts.get()), it.append(bl.it.counts.get())
    # independent transmission: xraylib directly, Beer-Lambert
    sample = bl.sample_changer.sample()
    if sample.material is None:
        t_true = 1.0
    else:
        mu = xraylib.CS_Total_CP(sample.material.formula, 17.0) * sample.material.density_g_cm3
        t_true = math.exp(-mu * sample.thickness_mm / 10)
    cal = FluxCalibration()
    rate = (3.0e11 + 1.28e7) / 6.25e4
    assert np.mean(i0) == pytest.approx(rate * 2.0, rel=6 / math.sqrt(rate * 2.0 * 20))
    assert cal.flux(np.mean(i0), 2.0) == pytest.approx(3.0e11, rel=1e-3)
    assert transmission(np.mean(i0), np.mean(it)) == pytest.approx(t_true, rel=2e-3)
    assert np.mean(it) == pytest.approx(rate * 2.0 * AIR_TRANSMISSION * t_true, rel=2e-3)


def test_closed_shutter_gives_only_the_offset(beamline):
    beamline.source.shutter.put("closed")
    beamline.i0.trigger()
    assert beamline.i0.counts.get() == pytest.approx(1.28e7 / 6.25e4, abs=6 * math.sqrt(205))


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan")])
def test_non_physical_monitor_is_named(bad):
    with pytest.raises(MonitorError, match="I0"):
        FluxCalibration().flux(bad, 1.0)
