"""Gain maps from inputs that contradict each other are refused, never written: PONIs
swapped between positions, one PONI for several positions, a PONI of another distance,
positions that do not move the detector, an implausible result."""

from dataclasses import replace

import fabio
import numpy as np
import pytest
from tiled.queries import Contains

from xrd_bluesky.beamline import LiveInputs, analysis_router
from xrd_bluesky.plans import gain_map_scan
from xrd_bluesky.science.calibration.geometry_source import GeometrySource
from xrd_bluesky.science.gain_map.method import (
    PROFILE_TOLERANCE,
    RING_CENTRE_TOLERANCE_PX,
    RING_SCATTER_LIMIT,
    GainMapError,
    GainMapSettings,
    PositionPixels,
    _position_estimate,
    check_gain_plausible,
    check_shadows_disjoint,
    compute_gain_map,
    profile_deviations,
    ring_statistics,
)
from xrd_bluesky.science.sim.gain_map_measurement import simulate_gain_map_set
from xrd_bluesky.sim_devices.beamline import BeamlineConfig
from xrd_bluesky.store.writer import catalog_writers

DET = "Pilatus1M"
CONFIG = BeamlineConfig(detector=DET)


@pytest.fixture(scope="module")
def positions():
    """Glass at the five default positions (as in test_gain_map.py)."""
    return simulate_gain_map_set(CONFIG.true_geometry(), CONFIG.beamstop, detector=DET).positions


def swapped(positions, i, j):
    """``positions`` with the PONIs of ``i`` and ``j`` exchanged."""
    out = list(positions)
    out[i], out[j] = replace(out[i], poni=positions[j].poni), replace(out[j], poni=positions[i].poni)
    return out


def first_round(positions):
    """Per position: (first-round gain estimate, 2theta map in rad, radial profile)."""
    out = []
    for p in positions:
        pixels = PositionPixels.prepare(p, GainMapSettings())
        estimate, _, profile = _position_estimate(pixels, np.ones(p.mean_frame.size), GainMapSettings())
        out.append((pixels.image(estimate), pixels.two_theta_map_rad, profile))
    return out


def test_good_inputs_sit_far_below_the_thresholds_and_the_centre_fit_measures_pixels(positions):
    """Measured on good inputs: beam centres within 0.5 px of the rings' centre, scatter
    around the ring mean ~1 x the pixel scatter, profiles within 0.3 %; a PONI moved by
    10 px is found 10 px off."""
    rounds = first_round(positions)
    for estimate, tth, profile in rounds:
        offset_px, scatter_ratio = ring_statistics(estimate, tth, profile)
        assert np.hypot(*offset_px) < RING_CENTRE_TOLERANCE_PX / 10
        assert scatter_ratio < RING_SCATTER_LIMIT / 2.5
    assert np.all(profile_deviations([profile for *_, profile in rounds]) < PROFILE_TOLERANCE / 6)
    poni = positions[1].poni
    shifted = replace(positions[1], poni=replace(poni, poni1=poni.poni1 + 10 * poni.detector_model().pixel1))
    (estimate, tth, profile), = first_round([shifted])
    offset_px, _ = ring_statistics(estimate, tth, profile)
    np.testing.assert_allclose(offset_px, [10, 0], atol=0.5)


@pytest.mark.parametrize("i, j", [(1, 2), (0, 3), (3, 4)])
def test_swapped_ponis_name_both_positions(positions, i, j):
    with pytest.raises(GainMapError, match=rf"position {i}: beam centre .* position {j}: beam centre .* PONI"):
        compute_gain_map(swapped(positions, i, j))


def test_two_positions_swapped_with_each_other(positions):
    """Their profiles are smeared alike (they agree): the rings' centre tells."""
    with pytest.raises(GainMapError, match=r"position 0: beam centre \d+\.\d px .* position 1: beam centre"):
        compute_gain_map(swapped(positions[:2], 0, 1))


def test_one_poni_for_two_positions(positions):
    same = list(positions)
    same[2] = replace(same[2], poni=same[1].poni)
    with pytest.raises(GainMapError, match=r"position 1 \(beam centre .*\) and position 2 .* same geometry but their "
                                           r"frames differ \(robust reduced chi2 1\d\d"):
        compute_gain_map(same)
    with pytest.raises(GainMapError, match=r"position 0 .* and position 1 .* same geometry"):
        compute_gain_map([replace(p, poni=positions[0].poni) for p in positions])


def test_one_poni_for_two_positions_of_a_live_run(positions):
    """A live geometry that does not follow the stage gives every position one PONI: the
    beamstop shadows, checked first, coincide and the message says why."""
    poni = positions[0].poni
    with pytest.raises(GainMapError, match=r"position 0 and position 1 \(\d+ pixels, the same geometry: does it"):
        check_shadows_disjoint([poni, poni], CONFIG.beamstop)


def test_poni_of_another_distance(positions):
    """A centred PONI of the wrong distance: the position's profile is stretched in 2theta."""
    wrong = list(positions)
    wrong[1] = replace(wrong[1], poni=replace(wrong[1].poni, dist=0.33))
    with pytest.raises(GainMapError, match=r"radial profile.* position 1 by 1\d\.\d%"):
        compute_gain_map(wrong)


def test_repeated_position_does_not_move_the_detector():
    repeated = simulate_gain_map_set(CONFIG.true_geometry(), CONFIG.beamstop, detector=DET,
                                     positions=((0.0, 0.0, 300.0), (0.0, 0.0, 300.0)), frames=1).positions
    with pytest.raises(GainMapError, match=r"does not move between position 0, position 1 .* at least 2 distinct"):
        compute_gain_map(repeated)


def test_implausible_gain_spread_or_bad_fraction():
    rng = np.random.default_rng(0)
    seen = np.ones((200, 200), bool)
    check_gain_plausible(rng.normal(1.0, 0.05, seen.shape), np.zeros_like(seen), seen)
    with pytest.raises(GainMapError, match=r"robust spread is 4\d\.\d% \(plausible <= 30%\)"):
        check_gain_plausible(rng.normal(1.0, 0.45, seen.shape), np.zeros_like(seen), seen)
    bad = rng.random(seen.shape) < 0.25
    with pytest.raises(GainMapError, match=r"2\d\.\d% of the seen pixels are flagged bad \(plausible <= 20%\)"):
        check_gain_plausible(np.ones(seen.shape), bad, seen)


def test_cli_refuses_swapped_poni_files(positions, tmp_path, capsys):
    """Exit status 2, the positions named, no file written."""
    from xrd_bluesky.cli import main

    args = []
    for i, p in enumerate(positions[1:3]):
        fabio.tifimage.TifImage(data=(p.mean_frame * p.n_frames).astype(np.float32)).write(str(tmp_path / f"f{i}.tif"))
        p.poni.write(tmp_path / f"pos{i}.poni")
        fabio.tifimage.TifImage(data=p.mask.astype(np.uint8)).write(str(tmp_path / f"mask{i}.tif"))
    for i, poni in ((0, 1), (1, 0)):
        args += ["--frames", str(tmp_path / f"f{i}.tif"), "--poni", str(tmp_path / f"pos{poni}.poni"),
                 "--mask", str(tmp_path / f"mask{i}.tif")]
    out = tmp_path / "gain.tif"
    assert main(["gain-map", *args, "-o", str(out)]) == 2
    assert "frames do not match their PONI at position 0 (" in capsys.readouterr().err
    assert not out.exists()


class StageYReversed(GeometrySource):
    """A geometry model with the stage's y axis the wrong way round: the PONIs of
    y = +12 and -12 mm are exchanged."""

    def poni(self, position, energy_keV):
        return super().poni(None if position is None else replace(position, y=-position.y), energy_keV)


def test_live_gain_map_from_swapped_ponis_ends_fail(RE, catalog, beamline):
    """The derived run ends ``fail`` with the message; no gain map becomes current."""
    bl = beamline
    raw, processed = catalog_writers(catalog)
    RE.subscribe(raw)
    inputs = LiveInputs(catalog, geometry=StageYReversed(bl.true_geometry(), "simulator_truth"))
    RE.subscribe(analysis_router(inputs, bl.description, processed, export_dir=catalog.frames_dir.parent))
    try:
        bl.sample_changer.slot.put("glass")
        bl.source.flux.put(2e12)
        uid = RE(gain_map_scan(bl.detector, bl.stage, [(0, 12, 300), (0, -12, 300)], frames_per_position=1,
                               exposure=1.0, shutter=bl.source.shutter, geometry=bl.true_geometry(),
                               beamstop=bl.config.beamstop, energy=bl.source.energy))[0]
    finally:
        raw.close()
        processed.close()
    derived = catalog.processed.search(Contains("parent_uids", uid)).values().last()
    assert derived.stop["exit_status"] == "fail"
    assert "GainMapError: frames do not match their PONI at position 0" in derived.stop["reason"]
