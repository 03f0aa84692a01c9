"""``xrd-bluesky serve --database postgresql://...``: the catalog and the runs' tables in
PostgreSQL (a throw-away cluster), arrays and frames in the data directory. A session
against it calibrates, measures a gain map and integrates live with the same accuracy
against the simulator's truth as on the embedded catalog; its runs are found, traced
and replayed as there; the numbers read through Tiled are rows in PostgreSQL."""

from __future__ import annotations

import math
import secrets
from contextlib import closing

import numpy as np
import pandas
import pytest
from bluesky_tiled_plugins.queries import TimeRange
from conftest import TEST_DETECTOR
from test_replay import assert_same_results, assert_same_start
from tiled.queries import Contains, FullText, Key

from xrd_bluesky.cli.demo import ring_checks
from xrd_bluesky.cli.session import build_session
from xrd_bluesky.plans import calibration_scan, gain_map_scan, multi_position_count
from xrd_bluesky.science.geometry import Poni, StagePosition
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.sim_devices import BeamlineConfig
from xrd_bluesky.store import lineage, open_catalog
from xrd_bluesky.store.calibrations import latest_calibration
from xrd_bluesky.store.gain_maps import latest_gain_map_uid
from xrd_bluesky.store.replay import replay
from xrd_bluesky_bench.testing import (
    PostgresNotInstalledError,
    ServerProcess,
    TemporaryPostgres,
    postgres_bin_dir,
)

CALIBRATION_POSITIONS = [(0, 0, 230), (12, -10, 230)]
GAIN_POSITIONS = [(0, 0, 300), (0, 12, 300), (0, -12, 300), (15, 6, 300)]
POSITIONS = [(0.0, 0.0, 300.0), (12.0, -8.0, 260.0)]

try:
    postgres_bin_dir()
except PostgresNotInstalledError as exc:  # .ci/run installs it; a user's machine may not have it
    pytestmark = pytest.mark.skip(reason=str(exc))


@pytest.fixture(scope="module")
def postgres():
    with TemporaryPostgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return tmp_path_factory.mktemp("pg-served")


@pytest.fixture(scope="module")
def api_key():
    key = secrets.token_hex(16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TILED_API_KEY", key)
        yield key


@pytest.fixture(scope="module")
def server(postgres, directory, api_key):
    """``xrd-bluesky serve --directory D --database postgresql://...`` (D/frames is
    where the session's detector writes)."""
    with ServerProcess(directory, api_key, database=postgres.uri) as served:
        yield served


@pytest.fixture(scope="module")
def session(server, directory):
    session = build_session(uri=server.uri, directory=directory,
                            config=BeamlineConfig(detector=TEST_DETECTOR, seed=7))
    yield session
    session.close()


def derived_of(catalog, parent_uid: str, analysis: str):
    """The live derived run of ``analysis`` made from ``parent_uid`` (exactly one)."""
    runs = [r for r in catalog.processed.search(Contains("parent_uids", parent_uid)).values()
            if r.start["analysis"] == analysis and not r.start.get("replay")]
    assert len(runs) == 1, (parent_uid, analysis, len(runs))
    return runs[0]


@pytest.fixture(scope="module")
def calibration(session):
    """A CeO2 calibration scan at two positions: raw uid, derived run."""
    bl = session.beamline
    bl.sample_changer.slot.put("CeO2")
    uid, = session.RE(calibration_scan(bl.detector, bl.stage, "CeO2", CALIBRATION_POSITIONS, monitors=[bl.i0],
                                       shutter=bl.source.shutter, energy=bl.source.energy))
    return uid, derived_of(session.catalog, uid, "calibration")


@pytest.fixture(scope="module")
def gain_map(session, calibration):
    """A glass gain-map scan (as conftest's ``with_gain_map``): raw uid, derived run."""
    bl = session.beamline
    flux = bl.source.flux.get()
    bl.sample_changer.slot.put("glass")
    bl.source.flux.put(2e12)
    try:
        uid, = session.RE(gain_map_scan(bl.detector, bl.stage, GAIN_POSITIONS, frames_per_position=3, exposure=1.0,
                                        shutter=bl.source.shutter, geometry=bl.true_geometry(),
                                        beamstop=bl.config.beamstop, energy=bl.source.energy))
    finally:
        bl.source.flux.put(flux)
    return uid, derived_of(session.catalog, uid, "gain_map")


@pytest.fixture(scope="module")
def measured(session, calibration, gain_map):
    """CeO2 at two detector positions, integrated live: raw uid, derived integration."""
    bl = session.beamline
    bl.sample_changer.slot.put("CeO2")
    uid, = session.RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, POSITIONS,
                                           shutter=bl.source.shutter, energy=bl.source.energy,
                                           sample=bl.sample_changer.sample().metadata()))
    return uid, derived_of(session.catalog, uid, "integration")


def sql(postgres, query: str):
    """Run ``query`` in the cluster's catalog database and commit; its rows as a pandas
    DataFrame (None if it returns none)."""
    import adbc_driver_postgresql.dbapi

    with closing(adbc_driver_postgresql.dbapi.connect(postgres.uri)) as conn, closing(conn.cursor()) as cursor:
        cursor.execute(query)
        rows = cursor.fetch_arrow_table().to_pandas() if cursor.description else None
        conn.commit()
        return rows


def sql_table(node) -> tuple[str, int]:
    """The PostgreSQL table of a Tiled table node and its rows' ``_dataset_id``."""
    source, = node.data_sources()
    return source.parameters["table_name"], int(source.parameters["dataset_id"])


def test_calibration_recovers_the_true_geometry(calibration, session):
    """Issue 3's bounds per position: beam centre 0.2 px, distance 0.05 %, tilts 0.02 deg;
    it becomes the current calibration."""
    _, derived = calibration
    assert derived.stop["exit_status"] == "success", derived.stop["reason"]
    table = derived["positions"].read()
    truth = session.beamline.config.true_geometry()
    assert len(table["dist"]) == len(CALIBRATION_POSITIONS)
    for i in range(len(CALIBRATION_POSITIONS)):
        position = StagePosition(*(float(table[f"stage_{a}"][i]) for a in ("x", "y", "distance")))
        found = Poni(**{k: float(table[k][i]) for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3",
                                                        "wavelength")}, detector=TEST_DETECTOR)
        true = truth.poni_at(position)
        assert np.all(np.abs(np.subtract(found.beam_centre_px(), true.beam_centre_px())) < 0.2)
        assert abs(found.dist - true.dist) / true.dist < 5e-4
        for rot in ("rot1", "rot2"):
            assert abs(math.degrees(getattr(found, rot) - getattr(true, rot))) < 0.02, rot
    assert latest_calibration(session.catalog.processed).calibration_uid == derived.start["uid"]


def test_gain_map_matches_the_detector_gain(gain_map, session):
    """The derived gain map matches the simulator's pixel gain within 1.3x its own
    Poisson uncertainty (rms), flags every dead, damaged and hot pixel, and is current."""
    _, derived = gain_map
    assert derived.stop["exit_status"] == "success", derived.stop["reason"]
    gain = np.asarray(derived["gain_map"]["gain"].read())[0]
    bad = np.asarray(derived["gain_map"]["bad"].read())[0].astype(bool)
    sigma = np.asarray(derived["gain_map"]["gain_sigma"].read())[0]
    truth = session.beamline.detector.response
    normal = ~(bad | truth.gaps) & np.isfinite(sigma)
    scale = np.median(gain[normal] / truth.gain[normal])
    err = gain[normal] / scale - truth.gain[normal]
    assert np.sqrt(np.mean(err**2)) < 1.3 * np.sqrt(np.mean(sigma[normal] ** 2))
    assert bad[truth.dead].all() and bad[truth.damaged].all() and bad[truth.hot].all()
    assert latest_gain_map_uid(session.catalog.processed) == derived.start["uid"]


def test_live_integration_puts_the_rings_where_bragg_does(measured, calibration, gain_map):
    """Integrated with the calibration and gain map just made: every CeO2 ring within
    0.01 deg of Bragg's law at each position."""
    uid, derived = measured
    assert derived.stop["exit_status"] == "success", derived.stop["reason"]
    assert derived.start["parent_uids"] == [uid]
    assert derived.start["calibration_uid"] == calibration[1].start["uid"]
    assert derived.start["gain_map_uid"] == gain_map[1].start["uid"]
    assert derived.start["geometry"]["source"] == "calibration"
    data = derived["primary"].read()
    ceo2 = default_library()["CeO2"]
    for i in range(len(POSITIONS)):
        checks = ring_checks(np.asarray(data["two_theta"][i]), np.asarray(data["intensity_2theta"][i]),
                             np.asarray(data["sigma_2theta"][i]), ceo2, 17.0)
        assert len(checks) >= 3
        assert max(abs(c.error_deg) for c in checks) < 0.01


def test_runs_are_found_by_their_metadata(measured, calibration, gain_map, session):
    """Tiled's queries as PostgreSQL runs them (JSONB containment, paths, LIKE,
    comparisons, full text), through databroker-style lookups."""
    raw, processed = session.catalog.raw, session.catalog.processed
    measured_uid, calibration_uid, gain_uid = measured[0], calibration[0], gain_map[0]
    assert set(raw.search(Key("purpose") == "calibration")) == {calibration_uid}
    assert set(raw.search(Key("purpose") == "measurement")) == {measured_uid}
    assert measured_uid in raw.search(Key("sample.name") == "CeO2")
    assert gain_uid not in raw.search(Key("sample.name") == "CeO2")
    assert set(raw.search(Key("energy_keV") > 16.9)) == {calibration_uid, gain_uid, measured_uid}
    assert not raw.search(Key("energy_keV") < 16.9)
    assert set(raw.search(TimeRange(since=raw[measured_uid].start["time"]))) == {measured_uid}
    assert measured_uid in raw.search(FullText("CeO2")) and gain_uid not in raw.search(FullText("CeO2"))
    assert raw[raw[measured_uid].start["scan_id"]].start["uid"] == measured_uid
    assert raw[measured_uid[:10]].start["uid"] == measured_uid
    assert raw[-1].start["uid"] == measured_uid
    assert latest_calibration(processed).calibration_uid == calibration[1].start["uid"]
    assert latest_gain_map_uid(processed) == gain_map[1].start["uid"]
    assert [r.start["uid"] for r in processed.search(Contains("parent_uids", gain_uid)).values()] \
        == [gain_map[1].start["uid"]]


def test_lineage_walks_the_integration_back_to_its_raw_runs(measured, calibration, gain_map, session):
    tree = lineage(session.catalog, measured[1].start["uid"])
    assert tree.raw_uids() == {measured[0], calibration[0], gain_map[0]}
    assert [n.uid for n in tree.inputs["calibration"]] == [calibration[1].start["uid"]]
    assert [n.uid for n in tree.inputs["gain_map"]] == [gain_map[1].start["uid"]]


def test_replays_equal_live(measured, calibration, session):
    """The measurement and the calibration replayed from the served catalog: new derived
    runs equal to the live ones within 1e-12 relative."""
    catalog = session.catalog
    for raw_uid, live, analysis in ((measured[0], measured[1], "integration"),
                                    (calibration[0], calibration[1], "calibration")):
        made = replay(catalog, raw_uid)
        assert [(r.analysis, r.exit_status, r.replay_of) for r in made] == [(analysis, "success", live.start["uid"])]
        again = catalog.processed[made[0].uid]
        assert_same_start(live, again)
        assert assert_same_results(live, again) <= 1e-12
    assert latest_calibration(catalog.processed).calibration_uid == calibration[1].start["uid"]


def test_tables_are_rows_in_postgres_and_arrays_files_in_the_directory(measured, postgres, directory, session):
    """The event streams read through Tiled are the rows of tables in the PostgreSQL
    database, indexed by run (no DuckDB or SQLite file anywhere); arrays are files under
    D/tiled/data, frames under D/frames."""
    uid, derived = measured
    stored = f"postgresql://127.0.0.1:{postgres.port}/{postgres.databases[0]}"  # credentials are never stored
    for run in (session.catalog.raw[uid], derived):
        node = run["primary"].base["internal"]
        source, = node.data_sources()
        assert source.mimetype == "application/x-tiled-sql-table"
        assert [a.data_uri for a in source.assets] == [stored]
        name, dataset = sql_table(node)
        rows = sql(postgres, f'SELECT * FROM "{name}" WHERE _dataset_id = {dataset} ORDER BY seq_num')
        read = node.read()
        assert len(rows) == len(read) == len(POSITIONS)
        for column in read.columns:  # every value, bit for bit
            assert rows[column.lower()].tolist() == read[column].tolist(), column
        indexes = sql(postgres, f"SELECT indexdef FROM pg_indexes WHERE tablename = '{name}'")["indexdef"]
        assert any("(_dataset_id, seq_num)" in d for d in indexes), list(indexes)  # a run is found, not scanned for
    created = set(sql(postgres, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")["tablename"])
    assert {"nodes", "data_sources", "assets"} <= created  # the catalog
    assert any(t.startswith("table_") for t in created)  # and the tables
    assert not list(directory.rglob("*.duckdb")) and not list(directory.rglob("*.db"))
    assert any(p.is_file() for p in (directory / "tiled" / "data").rglob("*"))
    frames = [d["uri"] for n, d in session.catalog.raw[uid].documents() if n == "stream_resource"]
    assert frames and all(str(directory / "frames") in f for f in frames)


def test_events_read_back_in_order_wherever_postgres_keeps_their_rows(measured, postgres, session):
    """PostgreSQL returns rows in storage order, which is not the order they were
    appended in (rows appended through different pooled connections, or updated, move):
    a run's rows rewritten in reverse order still read back first event first, with
    the detector position it was taken at (the frames, in array storage, stay in event
    order, so they keep matching their row)."""
    uid, _ = measured
    run = session.catalog.raw[uid]
    node = run["primary"].base["internal"]
    name, dataset = sql_table(node)
    sql(postgres, f'WITH moved AS (DELETE FROM "{name}" WHERE _dataset_id = {dataset} RETURNING *) '
                  f'INSERT INTO "{name}" SELECT * FROM moved ORDER BY seq_num DESC')
    stored = sql(postgres, f'SELECT seq_num FROM "{name}" WHERE _dataset_id = {dataset}')["seq_num"].tolist()
    assert stored == [2, 1]  # the rows really are in reverse order in the table
    read = node.read()
    assert read["seq_num"].tolist() == [1, 2]
    positions = np.column_stack([read[f"det_stage_{a}"] for a in ("x", "y", "distance")])
    np.testing.assert_allclose(positions, POSITIONS, atol=1e-6)  # mm


def test_a_second_server_on_the_same_database_serves_the_same_runs(measured, postgres, directory, api_key,
                                                                   session):
    """Unlike DuckDB (one process per file), PostgreSQL lets a second server serve the
    catalog while the first runs: the same frames, table rows and arrays."""
    uid, derived = measured
    first = session.catalog.raw[uid]
    with ServerProcess(directory, api_key, database=postgres.uri) as second:
        other = open_catalog(second.uri, directory=directory)
        raw = other.raw[uid]
        np.testing.assert_array_equal(raw["primary"]["det_image"].read(), first["primary"]["det_image"].read())
        pandas.testing.assert_frame_equal(raw["primary"].base["internal"].read(),
                                          first["primary"].base["internal"].read())
        again = other.processed[derived.start["uid"]]
        for key in ("two_theta", "intensity_2theta"):
            np.testing.assert_array_equal(np.asarray(again["primary"].read()[key]),
                                          np.asarray(derived["primary"].read()[key]))
