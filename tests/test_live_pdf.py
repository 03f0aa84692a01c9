"""Live pair distribution functions through the RunEngine and the catalog: simulated
frames of fcc Ni at 100 keV, integrated and turned into G(r) live, against the G(r) the
simulator's sample is defined by."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from tiled.queries import Contains

from xrd_bluesky.callbacks.pdf_plot import LivePDFPlot
from xrd_bluesky.plans import multi_position_count
from xrd_bluesky.science.pdf.pair_distribution import (
    PDFConfig,
    peak_positions,
    transform,
)
from xrd_bluesky.store.derived_runs import latest_successful

#: Two detector distances (mm): 150 mm reaches Q = 25 1/A in full rings at 100 keV on the 1M.
POSITIONS = [(0.0, 0.0, 150.0), (0.0, 0.0, 160.0)]
PDF = {"rpoly": 0.9, "qmin": 0.5, "qmax": 24.0, "qmaxinst": 25.0, "rmax": 25.0}


@pytest.fixture
def nickel_at_100_keV(live, beamline):
    bl = beamline
    energy, flux = bl.source.energy.get(), bl.source.flux.get()
    bl.source.energy.put(100.0)
    bl.source.flux.put(1e11)  # the strongest ring just below the 1M's saturation
    bl.sample_changer.slot.put("Ni")
    yield live, bl
    bl.source.energy.put(energy)
    bl.source.flux.put(flux)


def _pdf_run(catalog, raw_uid):
    integration = latest_successful(catalog.processed.search(Contains("parent_uids", raw_uid)), "integration")
    return latest_successful(catalog.processed.search(Contains("parent_uids", integration.start["uid"])), "pdf")


def test_live_pdf_of_nickel(nickel_at_100_keV, catalog):
    RE, bl = nickel_at_100_keV
    sample = bl.sample_changer.sample()
    uid, = RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, POSITIONS, shutter=bl.source.shutter,
                                   energy=bl.source.energy, sample=sample.metadata(), md={"pdf": PDF}))
    run = _pdf_run(catalog, uid)
    assert run.start["parameters"]["composition"] == "Ni" and run.start["parameters"]["qmax"] == 24.0
    gr, stitched = run["gr"].read(), run["stitched_gr"].read()
    assert len(gr["gr"]) == len(POSITIONS) and bool(np.asarray(stitched["final"])[-1])
    assert all(str(f.item()) == "" for f in gr["flags"])  # nothing saturated, nothing repaired
    descriptor = run["stitched_gr"].metadata["data_keys"]
    assert descriptor["r"]["units"] == "A" and descriptor["gr"]["units"] == "1/A^2"
    r, g = np.asarray(stitched["r"])[-1], np.asarray(stitched["gr"])[-1]
    # the truth seen through the same Q window: peaks (maxima above a tenth of the highest; not the termination
    # ripples) where ours must be (the window moves merged shells by up to 0.016 A)
    q = np.linspace(0.5, 25.0, 3000)
    config = PDFConfig("Ni", **PDF)
    _, windowed = transform(q, sample.reduced_structure_function(q), config)
    expected = peak_positions(r, windowed, min_height=0.1 * windowed.max())
    expected = expected[expected < 20.0]
    found = peak_positions(r, g)
    errors = np.array([found[np.argmin(np.abs(found - e))] - e for e in expected])
    assert len(expected) >= 25 and np.max(np.abs(errors)) < 0.005, errors  # measured: 28 peaks, 0.0046 A
    # below the first neighbour: -4 pi rho0 r
    first, sigma = sample.pair_distances(3.0)[0][0], sample.shells.arrays()[2][0]
    between = (r > 1.0) & (r < first - 3 * sigma)
    slope = np.sum(g[between] * r[between]) / np.sum(r[between] ** 2)
    assert slope == pytest.approx(-4 * math.pi * sample.number_density_A3, rel=0.10)


def test_saturated_rings_are_flagged(nickel_at_100_keV, catalog):
    """Ten times the flux saturates the 111 ring: its pixels are left out, the ring loses 70 % of its intensity
    and G(r) its baseline; the PDF events say so."""
    RE, bl = nickel_at_100_keV
    bl.source.flux.put(1e12)
    uid, = RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, POSITIONS[:1], shutter=bl.source.shutter,
                                   energy=bl.source.energy, sample=bl.sample_changer.sample().metadata(),
                                   md={"pdf": PDF}))
    flags = [str(f.item()) for f in _pdf_run(catalog, uid)["gr"].read()["flags"]]
    assert len(flags) == 1 and "saturated pixels left out of frame 1" in flags[0]


def test_background_run_subtracted_on_the_absolute_scale(nickel_at_100_keV, catalog):
    """A background run named by uid is subtracted from the patterns on the absolute scale (both per incident
    photon): half of the sample itself as background leaves the shape of G(r); 1.5 times it is stronger than the
    sample, which is said, and the PDF run fails naming it."""
    RE, bl = nickel_at_100_keV
    md = {"detectors": [bl.detector, bl.i0, bl.it], "stage": bl.stage, "positions": POSITIONS[:1],
          "shutter": bl.source.shutter, "energy": bl.source.energy, "sample": bl.sample_changer.sample().metadata()}
    background, = RE(multi_position_count(**md))
    alone, = RE(multi_position_count(**md, md={"pdf": PDF}))
    half, = RE(multi_position_count(**md, md={"pdf": {**PDF, "background_uid": background, "bgscale": 0.5}}))
    g_alone = np.asarray(_pdf_run(catalog, alone)["gr"].read()["gr"])[0]
    run = _pdf_run(catalog, half)
    assert run.start["background_uid"] == background and run.start["parameters"]["patterns"] == "absolute (1/cm/sr)"
    g_half = np.asarray(run["gr"].read()["gr"])[0]
    r = np.asarray(run["gr"].read()["r"])[0]
    window = (r > 1.5) & (r < 20)
    # the same shape: only the two frames' independent noise keeps the correlation below 1
    assert np.corrcoef(g_alone[window], g_half[window])[0, 1] > 0.999
    too_much, = RE(multi_position_count(**md, md={"pdf": {**PDF, "background_uid": background, "bgscale": 1.5}}))
    integration = latest_successful(catalog.processed.search(Contains("parent_uids", too_much)), "integration")
    failed = catalog.processed.search(Contains("parent_uids", integration.start["uid"])).values().last()
    assert failed.stop["exit_status"] == "fail" and "stronger than the sample" in failed.stop["reason"]


def test_live_pdf_plot_draws_frames_and_the_stitched_g():
    plot = LivePDFPlot(Figure())
    r = np.linspace(0, 10, 101)
    plot("start", {"uid": "s", "parent_scan_id": 3, "sample": {"name": "Ni"}})
    plot("descriptor", {"uid": "d1", "name": "gr", "run_start": "s"})
    plot("descriptor", {"uid": "d2", "name": "stitched_gr", "run_start": "s"})
    plot("event", {"descriptor": "d1", "data": {"r": r, "gr": np.sin(r)}})
    plot("event", {"descriptor": "d2", "data": {"r": r, "gr": 2 * np.sin(r)}})
    lines = plot._axes[1].get_lines()
    assert [line.get_label() for line in lines] == ["latest frame", "stitched"]
    assert np.allclose(lines[1].get_ydata(), 2 * np.sin(r)) and plot._axes[1].get_xlabel() == "r (A)"
