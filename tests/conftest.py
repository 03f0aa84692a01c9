"""Shared fixtures: one embedded Tiled catalog per test session, a fresh RunEngine
and a fresh simulated beamline (Pilatus 1M for speed) per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from bluesky import RunEngine

from xrd_bluesky.beamline import LiveInputs, analysis_router
from xrd_bluesky.science.calibration.geometry_source import GeometrySource
from xrd_bluesky.sim_devices import BeamlineConfig, make_beamline
from xrd_bluesky.store import open_catalog
from xrd_bluesky.store.gain_maps import latest_gain_map_uid
from xrd_bluesky.store.writer import SpoolingWriter, catalog_writers, raw_writer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REALDATA = SHARED / "realdata"
TEST_DETECTOR = "Pilatus1M"


def realdata(*parts: str) -> Path:
    """Path of a file in ../shared/realdata, skipping the test when it is absent."""
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} not available (../shared/realdata is absent in a user's clone)")
    return path


@pytest.fixture(scope="session")
def beamline_data(tmp_path_factory):
    """A beamline's data area outside the catalog's own, where tests' detectors (the
    ecosystem's device classes) write their files."""
    return tmp_path_factory.mktemp("beamline_data")


@pytest.fixture(scope="session")
def catalog(tmp_path_factory, beamline_data):
    """The embedded catalog of the test session (Tiled serves one embedded server per
    process: a second one makes the first refuse its own API key)."""
    cat = open_catalog(directory=tmp_path_factory.mktemp("catalog"), storage_roots=[beamline_data])
    yield cat
    cat.close()


@pytest.fixture
def RE():
    return RunEngine({}, call_returns_result=False)


@pytest.fixture
def beamline(catalog):
    return make_beamline(BeamlineConfig(detector=TEST_DETECTOR, seed=7), data_dir=catalog.frames_dir)


@pytest.fixture
def live(RE, catalog, beamline):
    """RE subscribed to the raw writer and the session's analysis router: integration
    uses the latest calibration in the catalog (else, pinned by the test, the
    simulator's true geometry labelled ``simulator_truth``) and the
    latest gain map (the test beamline's detector is the same in every test: same
    seed). Documents go through the spooling writers, as in a session."""
    raw, processed = catalog_writers(catalog)
    yield from _live_with(RE, catalog, beamline, raw, processed)


def _live_with(RE, catalog, beamline, raw, processed):
    """RE with ``raw`` and, through the analysis router, ``processed`` subscribed; the
    lookups wait for both writers' uploads, as a session's do."""
    RE.subscribe(raw)
    inputs = LiveInputs(catalog, lambda: GeometrySource(beamline.true_geometry(), "simulator_truth"),
                        settle=lambda timeout_s: raw.flush(timeout_s) and processed.flush(timeout_s))
    RE.subscribe(analysis_router(inputs, beamline.description, processed, export_dir=catalog.frames_dir.parent))
    yield RE
    raw.close()
    processed.close()


@pytest.fixture
def live_uploading_after_stop(RE, catalog, beamline):
    """As :func:`live`, but a derived run's stop returns at once, its upload still
    running (as under load, when the writer stops waiting for a slow server)."""
    raw = raw_writer(catalog)
    processed = SpoolingWriter(catalog.processed, catalog.spool_dir / "processed", upload_lock=catalog.upload_lock,
                               whole_runs=True, stop_wait_s=0.0)
    yield from _live_with(RE, catalog, beamline, raw, processed)


@pytest.fixture
def with_gain_map(live, catalog, beamline):
    """The live RE, with a gain map of the test detector in the catalog (measured here,
    as a beamline would, if no earlier test made one); flux restored afterwards."""
    from xrd_bluesky.plans import gain_map_scan

    if latest_gain_map_uid(catalog.processed) is None:
        bl = beamline
        flux = bl.source.flux.get()
        bl.sample_changer.slot.put("glass")
        bl.source.flux.put(2e12)
        live(gain_map_scan(bl.detector, bl.stage, [(0, 0, 300), (0, 12, 300), (0, -12, 300), (15, 6, 300)],
                           frames_per_position=3, exposure=1.0, shutter=bl.source.shutter,
                           geometry=bl.true_geometry(), beamstop=bl.config.beamstop, energy=bl.source.energy))
        bl.source.flux.put(flux)
    assert latest_gain_map_uid(catalog.processed) is not None
    return live
