"""Replay: stored raw runs through the live analyses again, into new derived runs equal
to the live ones; another calibration moves the rings as it should; the router never
lets a failure to set up an analysis stop a scan."""

import logging
from dataclasses import replace

import numpy as np
import pyFAI.calibrant
import pytest
from tiled.queries import Contains

from xrd_bluesky.callbacks import AnalysisRouter
from xrd_bluesky.cli import main
from xrd_bluesky.errors import CorruptFrameError, GeometryError, MissingMetadataError, RunNotFoundError, UsageError
from xrd_bluesky.frames.hdf5 import path_from_uri
from xrd_bluesky.plans import (
    calibration_scan,
    dark_run,
    multi_position_count,
    strain_series,
)
from xrd_bluesky.science.calibration.geometry_source import GeometrySource
from xrd_bluesky.science.geometry import DetectorPositionModel, StagePosition
from xrd_bluesky.science.reduction.peak_fitting import fit_peak
from xrd_bluesky.science.units import two_theta_rad
from xrd_bluesky.sim_devices import make_beamline
from xrd_bluesky.store import lineage
from xrd_bluesky.store.calibrations import latest_calibration
from xrd_bluesky.store.gain_maps import latest_gain_map_uid
from xrd_bluesky.store.replay import replay

#: Start-document keys a replay sets anew.
NEW_KEYS = {"uid", "time", "replay", "replay_of"}
POSITIONS = [(0.0, 0.0, 300.0), (12.0, -8.0, 260.0)]
CALIBRATION_POSITIONS = [(0, 0, 230)]
#: The detector of the other calibration: 3 mm further from the sample than the truth.
BUMP_M = 0.003
#: Three Mg rings, fitted per event and in 18 azimuthal sectors (in 1D only in the
#: reference run that gives d0).
PEAKS = {"phase": "Mg", "hkl": [[1, 0, 0], [0, 0, 2], [1, 0, 1]], "model": "pseudo-voigt"}
STRAIN_INTEGRATION = {"npt": 3000, "cake": [1000, 18], "split": "no"}
REFERENCE_INTEGRATION = {"npt": 3000, "cake": None, "split": "no"}


def derived_of(catalog, parent_uid, analysis):
    """The live derived run of ``analysis`` made from run ``parent_uid``."""
    runs = [r for r in catalog.processed.search(Contains("parent_uids", parent_uid)).values()
            if r.start["analysis"] == analysis and not r.start.get("replay")]
    assert len(runs) == 1, (parent_uid, analysis, len(runs))
    return runs[0]


def replayed(catalog, raw_uid, **overrides):
    """Replay ``raw_uid``: the new derived runs by analysis, after checking that the
    derived runs made from it before are untouched and the new ones are new and marked."""
    existing = set(catalog.processed)
    before = made_from(catalog, raw_uid)
    runs = replay(catalog, raw_uid, **overrides)
    assert {uid: documents for uid, documents in made_from(catalog, raw_uid).items() if uid in before} == before
    out = {}
    for r in runs:
        assert r.uid not in existing and r.exit_status == "success", r
        run = catalog.processed[r.uid]
        assert run.start["replay"] is True and run.start["replay_of"] == r.replay_of
        out[r.analysis] = run
    return out


def made_from(catalog, uid) -> dict:
    """Start and stop documents of every derived run made from run ``uid``, directly or
    through others."""
    out = {}
    for run in catalog.processed.search(Contains("parent_uids", uid)).values():
        out[run.start["uid"]] = (dict(run.start), dict(run.stop))
        out.update(made_from(catalog, run.start["uid"]))
    return out


def assert_same_start(live, again, **expected):
    """The replay's start document is the live one's but for its uid, time and replay
    marks (and ``expected`` keys); it names the live run it redoes."""
    def kept(run):
        return {k: v for k, v in run.start.items() if k not in NEW_KEYS | set(expected)}
    assert kept(again) == kept(live)
    assert again.start["replay_of"] == live.start["uid"]
    for key, value in expected.items():
        assert again.start[key] == value, key


def assert_same_results(live, again) -> float:
    """Same streams, data keys (units, dtypes, shapes), configuration and event data;
    floats equal within 1e-12 relative. Returns the largest relative difference."""
    a, b = exported(live), exported(again)
    assert b.keys() == a.keys()
    worst = 0.0
    for stream, expected in a.items():
        got = b[stream]
        np.testing.assert_equal(got["data_keys"], expected["data_keys"], err_msg=stream)
        np.testing.assert_equal(got["configuration"], expected["configuration"], err_msg=stream)
        assert got["events"].keys() == expected["events"].keys(), stream
        for seq_num, data in expected["events"].items():
            assert got["events"][seq_num].keys() == data.keys(), (stream, seq_num)
            for key, value in data.items():
                message = f"{stream} event {seq_num}: {key}"
                if not is_float(expected["data_keys"][key]):
                    np.testing.assert_array_equal(np.asarray(got["events"][seq_num][key]), np.asarray(value), message)
                    continue
                x, y = np.array(value, dtype=float), np.array(got["events"][seq_num][key], dtype=float)
                np.testing.assert_allclose(y, x, rtol=1e-12, atol=0, equal_nan=True, err_msg=message)
                finite = np.isfinite(x) & (x != 0)
                if finite.any():
                    worst = max(worst, float(np.max(np.abs(y[finite] / x[finite] - 1))))
    return worst


def exported(run) -> dict:
    """A derived run's streams as the catalog exports them (``run.documents()``): per
    stream its data keys, configuration data and event data by ``seq_num``."""
    streams, names = {}, {}
    for name, doc in run.documents():
        assert name in ("start", "descriptor", "event", "stop"), name
        if name == "descriptor":
            names[doc["uid"]] = doc["name"]
            streams[doc["name"]] = {"data_keys": doc["data_keys"], "events": {},
                                    "configuration": {k: c["data"] for k, c in doc.get("configuration", {}).items()}}
        elif name == "event":
            streams[names[doc["descriptor"]]]["events"][doc["seq_num"]] = doc["data"]
    return streams


def is_float(data_key: dict) -> bool:
    """Whether a data key holds floating-point numbers (scalars or arrays)."""
    if "dtype_numpy" in data_key:
        return np.dtype(data_key["dtype_numpy"]).kind == "f"
    return data_key["dtype"] == "number"


def calibrate(live, catalog, bl) -> tuple[str, str]:
    """A calibration scan on beamline ``bl``: raw uid, derived (successful) uid."""
    bl.sample_changer.slot.put("CeO2")
    uid = live(calibration_scan(bl.detector, bl.stage, "CeO2", CALIBRATION_POSITIONS, shutter=bl.source.shutter,
                                energy=bl.source.energy))[0]
    derived = derived_of(catalog, uid, "calibration")
    assert derived.stop["exit_status"] == "success", derived.stop["reason"]
    return uid, derived.start["uid"]


def measure(live, bl, slot, positions, md=None) -> str:
    bl.sample_changer.slot.put(slot)
    return live(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, positions, shutter=bl.source.shutter,
                                     energy=bl.source.energy, sample=bl.sample_changer.sample().metadata(), md=md))[0]


@pytest.fixture(scope="module")
def made():
    """Runs made once for the module's tests (the catalog is the session's)."""
    return {}


@pytest.fixture
def calibrations(live, catalog, beamline, made):
    """Two live calibrations: first of a detector bumped ``BUMP_M`` further away (the
    "other" calibration), then of the true one, which stays current."""
    if "calibrations" not in made:
        truth = beamline.config.true_geometry()
        bumped = replace(truth, reference=replace(truth.reference, dist=truth.reference.dist + BUMP_M))
        other = calibrate(live, catalog, make_beamline(replace(beamline.config, geometry=bumped),
                                                       data_dir=catalog.frames_dir))
        current = calibrate(live, catalog, beamline)
        assert latest_calibration(catalog.processed).calibration_uid == current[1]
        made["calibrations"] = {"current": current, "other": other}
    return made["calibrations"]


@pytest.fixture
def measured(calibrations, with_gain_map, beamline, catalog, made):
    """A water standard and a CeO2 measurement at two positions naming it as standard
    and background (CeO2 powder in water), integrated and scaled live with the current
    calibration and gain map."""
    if "measured" not in made:
        live = with_gain_map
        water = measure(live, beamline, "water", POSITIONS[:1], md={"standard": "water"})
        made["measured"] = measure(live, beamline, "CeO2", POSITIONS,
                                   md={"standard_uid": water, "background_uid": water})
    return made["measured"]


def test_replayed_calibration_equals_live(calibrations, catalog):
    raw_uid, live_uid = calibrations["current"]
    live = catalog.processed[live_uid]
    again = replayed(catalog, raw_uid)["calibration"]
    assert_same_start(live, again)
    assert again.start["parameters"]["beamstop"] is not None
    assert assert_same_results(live, again) <= 1e-12
    exported = catalog.frames_dir.parent / "calibrations"
    assert len(list((exported / again.start["uid"]).glob("position_*.poni"))) == len(CALIBRATION_POSITIONS)
    assert latest_calibration(catalog.processed).calibration_uid == live_uid  # a replay never becomes current


def test_replayed_gain_map_equals_live(calibrations, with_gain_map, catalog, made):
    live = catalog.processed[latest_gain_map_uid(catalog.processed)]
    again = replayed(catalog, live.start["parent_uids"][0])["gain_map"]
    assert_same_start(live, again)
    assert assert_same_results(live, again) <= 1e-12
    assert latest_gain_map_uid(catalog.processed) == live.start["uid"]
    made["replayed_gain_map"] = again.start["uid"]


def test_replayed_integration_and_absolute_scale_equal_live(measured, catalog):
    live = derived_of(catalog, measured, "integration")
    assert {"absolute", "stitched_absolute", "subtracted"} <= set(live)
    again = replayed(catalog, measured)["integration"]
    assert_same_start(live, again)
    for key in ("calibration_uid", "gain_map_uid", "standard_uid", "background_uid"):
        assert again.start[key] is not None, key
    assert assert_same_results(live, again) <= 1e-12
    tree = lineage(catalog, again.start["uid"])
    assert tree.kind == f"integration (replay of {live.start['uid']})" and measured in tree.raw_uids()


def test_replayed_peak_fits_equal_live(live, beamline, catalog):
    bl = beamline
    bl.sample_changer.slot.put("Mg")
    bl.source.flux.put(3e11)
    common = dict(stage=bl.stage, shutter=bl.source.shutter, energy=bl.source.energy,
                  sample=bl.sample_changer.sample().metadata())
    detectors = [bl.detector, bl.i0, bl.it]
    reference, = live(strain_series(detectors, bl.sample_changer.strain, [0.0], peaks=PEAKS,
                                    integration=REFERENCE_INTEGRATION, **common))
    uid, = live(strain_series(detectors, bl.sample_changer.strain, [4e-3], peaks={**PEAKS, "d0_uid": reference},
                              integration=STRAIN_INTEGRATION, **common))
    integration = derived_of(catalog, uid, "integration")
    fits = derived_of(catalog, integration.start["uid"], "peak_fits")
    again = replayed(catalog, uid)
    assert set(again) == {"integration", "peak_fits"}
    assert_same_start(integration, again["integration"])
    assert_same_start(fits, again["peak_fits"], parent_uids=[again["integration"].start["uid"]])
    assert fits.start["d0_uid"] == reference and "sectors" in fits
    assert "reference run" in exported(fits)["primary"]["configuration"]["peaks"]["Mg_101_d0_source"]
    assert assert_same_results(integration, again["integration"]) <= 1e-12
    assert assert_same_results(fits, again["peak_fits"]) <= 1e-12


def test_replay_command_with_another_calibration_moves_the_rings(measured, calibrations, catalog, made, capsys,
                                                                 monkeypatch):
    """``xrd-bluesky replay UID --calibration OTHER --gain-map G``: the other
    calibration's detector is 3 mm further away, so every CeO2 ring moves by what that
    geometry predicts for the pixels it lies on (measured live); what does not depend
    on the geometry (monitors, exposure, flags) stays the same. The replay records the
    calibration and gain map it used."""
    other = calibrations["other"][1]
    gain_map = made.get("replayed_gain_map") or latest_gain_map_uid(catalog.processed)
    live = derived_of(catalog, measured, "integration")
    monkeypatch.setenv("TILED_API_KEY", catalog.uri.split("api_key=")[1])  # the session catalog, served
    assert main(["replay", measured, "--catalog", catalog.uri.split("?")[0],
                 "--directory", str(catalog.frames_dir.parent),
                 "--calibration", other, "--gain-map", gain_map]) == 0
    line, = capsys.readouterr().out.splitlines()
    uid, *rest = line.split()
    assert rest == ["integration", "replay", "of", live.start["uid"], "success"], line
    again = catalog.processed[uid]
    assert again.start["replay"] is True and again.start["replay_of"] == live.start["uid"]
    assert again.start["calibration_uid"] == other and again.start["gain_map_uid"] == gain_map
    assert again.start["geometry"]["source"] == "calibration"
    assert again.start["geometry"]["model"] != live.start["geometry"]["model"]

    a, b = exported(live), exported(again)
    for stream, keys in (("primary", ("i0", "it", "exposure_s", "absolute_ok", "dark_subtracted", "stage_x",
                                      "stage_y", "stage_distance", "parent_seq_num")),
                         ("absolute", ("transmission", "flux_ph_s", "standard_factor", "parent_seq_num"))):
        assert b[stream]["events"].keys() == a[stream]["events"].keys()
        for seq_num, data in a[stream]["events"].items():
            assert {k: b[stream]["events"][seq_num][k] for k in keys} == {k: data[k] for k in keys}

    position = StagePosition(*POSITIONS[0])
    before = GeometrySource(DetectorPositionModel.from_dict(live.start["geometry"]["model"]), "live")
    after = GeometrySource(DetectorPositionModel.from_dict(again.start["geometry"]["model"]), "other")
    tth_before = np.degrees(before.poni(position, 17.0).integrator().twoThetaArray())
    tth_after = np.degrees(after.poni(position, 17.0).integrator().twoThetaArray())
    d = pyFAI.calibrant.get_calibrant("CeO2").dspacing[:2]
    for ring in np.degrees(two_theta_rad(np.array(d), before.poni(position, 17.0).wavelength)):
        on_ring = np.abs(tth_before - ring) < 0.005
        shift = float(np.mean(tth_after[on_ring] - tth_before[on_ring]))
        assert abs(shift) > 0.05, shift
        centres = []
        for run, guess in ((a, ring), (b, ring + shift)):
            first = run["primary"]["events"][1]  # the frame at POSITIONS[0]
            x, y, sigma = (np.array(first[k], dtype=float) for k in ("two_theta", "intensity_2theta", "sigma_2theta"))
            centres.append(fit_peak(x, y, (guess - 0.15, guess + 0.15), sigma=sigma).centre)
        assert abs(centres[0] - ring) < 0.01, (ring, centres)
        assert abs(centres[1] - centres[0] - shift) < 0.005, (ring, shift, centres)


def test_replay_refuses_what_it_cannot_redo(live, beamline, catalog, calibrations, measured):
    """A derived run, an unknown uid, a dark run, another calibration for a calibration
    run, and a raw run whose frames are gone: each refused, naming the run."""
    live_integration = derived_of(catalog, measured, "integration").start["uid"]
    with pytest.raises(MissingMetadataError, match=f"{live_integration} is a derived run.*{measured}"):
        replay(catalog, live_integration)
    with pytest.raises(MissingMetadataError, match="no-such-run is not in the catalog"):
        replay(catalog, "no-such-run")
    bl = beamline
    dark = live(dark_run([bl.detector], bl.source.shutter, num=1))[0]
    with pytest.raises(MissingMetadataError, match=f"{dark} has purpose 'dark'"):
        replay(catalog, dark)
    with pytest.raises(MissingMetadataError, match="calibration run"):
        replay(catalog, calibrations["current"][0], calibration_uid=calibrations["other"][1])

    gone = measure(live, bl, "glass", POSITIONS[:1])
    files = [path_from_uri(d["uri"]) for n, d in catalog.raw[gone].documents() if n == "stream_resource"]
    for path in files:
        path.unlink()
    with pytest.raises(CorruptFrameError, match=f"{gone} cannot be replayed.*{files[0].name}.* is gone"):
        replay(catalog, gone)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_router_setup_failure_never_stops_the_scan(RE, beamline, catalog):
    """A geometry lookup that raises: logged with its traceback, the run not analysed,
    the scan a success with every raw event."""
    def geometry(detector_name):
        raise GeometryError("calibration 1234 holds a non-physical distance")

    derived, raw = [], []
    RE.subscribe(lambda name, doc: raw.append((name, doc)))
    RE.subscribe(AnalysisRouter(lambda name, doc: derived.append(name), geometry))
    handler = _Records()
    logger = logging.getLogger("xrd_bluesky.callbacks.router")
    logger.addHandler(handler)
    try:
        bl = beamline
        bl.sample_changer.slot.put("glass")
        uid, = RE(multi_position_count([bl.detector, bl.i0], bl.stage, POSITIONS, shutter=bl.source.shutter))
    finally:
        logger.removeHandler(handler)
    stop = next(doc for name, doc in raw if name == "stop")
    assert stop["exit_status"] == "success" and stop["num_events"]["primary"] == len(POSITIONS)
    assert sum(name == "event" for name, _ in raw) == len(POSITIONS) + 1  # and the dark
    assert derived == []
    failure, = [r for r in handler.records if r.levelno >= logging.ERROR]
    assert uid in failure.getMessage() and failure.exc_info[0] is GeometryError


def test_lineage_command_walks_an_integration_back_to_its_raw_runs(measured, catalog, capsys, monkeypatch):
    """``xrd-bluesky lineage UID`` on the live integration: the tree names the raw run,
    the calibration and the gain map it used, each down to their raw scans."""
    live = derived_of(catalog, measured, "integration")
    monkeypatch.setenv("TILED_API_KEY", catalog.uri.split("api_key=")[1])  # the session catalog, served
    assert main(["lineage", live.start["uid"], "--catalog", catalog.uri.split("?")[0],
                 "--directory", str(catalog.frames_dir.parent)]) == 0
    out = capsys.readouterr().out
    raw_line = out.splitlines()[-1]
    assert raw_line.startswith("raw runs:") and measured in raw_line
    for key in ("calibration_uid", "gain_map_uid"):
        assert f"processed/{live.start[key]}" in out
    assert set(raw_line.removeprefix("raw runs: ").split(", ")) == lineage(catalog, live.start["uid"]).raw_uids()


def test_replay_search_on_two_workers_equals_live_and_serial(live, beamline, catalog, capsys, monkeypatch):
    """``xrd-bluesky replay --search batch=… --workers 2`` against the session catalog,
    served: worker processes replay every matching run; each result equals the live one
    and the serial replay's (1e-12 relative), and every run is named in the output."""
    from xrd_bluesky.store.parallel_replay import find_runs, replay_runs

    batch = {"batch": "parallel replay"}
    uids = [measure(live, beamline, slot, POSITIONS, md=batch) for slot in ("CeO2", "glass", "water")]
    monkeypatch.setenv("TILED_API_KEY", catalog.uri.split("api_key=")[1])  # the session catalog, served
    assert main(["replay", "--search", "batch=parallel replay", "--workers", "2",
                 "--catalog", catalog.uri.split("?")[0], "--directory", str(catalog.frames_dir.parent)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"replaying 3 raw runs matching {batch} on 2 worker(s)"
    parallel = {}
    for header, line in zip(out[1::2], out[2::2]):
        raw_uid = header.removeprefix("raw run ").removesuffix(":")
        uid, analysis, *_, status = line.split()
        assert (analysis, status) == ("integration", "success"), line
        parallel[raw_uid] = catalog.processed[uid]
    assert sorted(parallel) == sorted(uids) == sorted(find_runs(catalog, batch))
    serial = {o.raw_uid: catalog.processed[o.runs[0].uid] for o in replay_runs(catalog, uids, workers=1)}
    for uid in uids:
        live_run = derived_of(catalog, uid, "integration")
        assert_same_start(live_run, parallel[uid])
        assert assert_same_results(live_run, parallel[uid]) <= 1e-12
        assert assert_same_results(serial[uid], parallel[uid]) <= 1e-12


def test_replay_search_refuses_bad_requests(catalog):
    from xrd_bluesky.store.parallel_replay import find_runs, parse_search, replay_runs

    assert parse_search(["batch=parallel replay", "scan_id=3", "dark_frames=true"]) == {
        "batch": "parallel replay", "scan_id": 3, "dark_frames": True}
    with pytest.raises(UsageError, match="'purpose' is not KEY=VALUE"):
        parse_search(["purpose"])
    with pytest.raises(RunNotFoundError, match="no replayable raw run matches"):
        find_runs(catalog, {"batch": "never recorded"})
    with pytest.raises(UsageError, match="at least 1"):
        replay_runs(catalog, [], workers=0)
