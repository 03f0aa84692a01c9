"""The writer that never blocks a scan: a durable spool, a background upload, and
``xrd-bluesky sync`` that back-fills the catalog exactly once.

The faults are real: a served Tiled process killed with SIGKILL mid-scan, a recording
process killed with SIGKILL mid-run, a spool directory that cannot be created.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count
from conftest import TEST_DETECTOR

from xrd_bluesky.cli.session import build_session
from xrd_bluesky.plans import multi_position_count
from xrd_bluesky.sim_devices import BeamlineConfig
from xrd_bluesky.store import open_catalog
from xrd_bluesky.store.spool import SpoolError, decode, encode, read_spool
from xrd_bluesky.store.sync import sync
from xrd_bluesky.store.writer import SpoolingWriter
from xrd_bluesky_bench.common import RequestCounter
from xrd_bluesky_bench.testing import ServerProcess

POSITIONS = [(0, 0, 300), (20, -15, 300), (-20, 15, 300)]


def test_a_document_reads_back_bit_for_bit():
    doc = {"uid": "u", "data": {"frame": np.arange(12, dtype=np.uint16).reshape(3, 4),
                                "q": np.array([0.1, np.nan, np.inf], np.float32), "n": np.int64(3),
                                "x": np.float32(0.1), "flag": np.bool_(True), "text": "CeO2"}}
    name, back = decode(encode("event", doc))
    assert name == "event"
    for key in ("frame", "q"):
        assert back["data"][key].dtype == doc["data"][key].dtype
        np.testing.assert_array_equal(back["data"][key], doc["data"][key])
    assert back["data"]["n"] == 3 and back["data"]["x"] == float(np.float32(0.1)) and back["data"]["flag"] is True


def test_a_spool_that_cannot_be_written_stops_the_scan_with_the_reason(tmp_path, beamline):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    writer = SpoolingWriter(None, blocker / "raw")
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(writer)
    with pytest.raises(SpoolError, match="cannot record raw data.*not-a-directory"):
        RE(count([beamline.i0]))
    writer.close()


def test_catalog_killed_mid_scan_then_sync_backfills_once(tmp_path, monkeypatch):
    key = secrets.token_hex(16)
    monkeypatch.setenv("TILED_API_KEY", key)
    server = ServerProcess(tmp_path, key)
    session = build_session(directory=tmp_path, uri=server.uri, config=BeamlineConfig(detector=TEST_DETECTOR, seed=7))
    try:
        bl = session.beamline
        bl.sample_changer.slot.put("CeO2")
        events = []

        def kill_server_at_third_event(name, doc):
            if name == "event":
                events.append(doc["uid"])
                if len(events) == 3:
                    server.kill()

        session.RE.subscribe(kill_server_at_third_event)
        uid, = session.RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, POSITIONS, num=2,
                                               shutter=bl.source.shutter, energy=bl.source.energy,
                                               sample=bl.sample_changer.sample().metadata()))
        spooled = list(read_spool(session.catalog.spool_dir / "raw" / f"{uid}.jsonl"))
        assert [n for n, _ in spooled].count("event") == 1 + 6  # the dark and six exposures
        assert spooled[-1][0] == "stop" and spooled[-1][1]["exit_status"] == "success"
        derived_spools = list((session.catalog.spool_dir / "processed").glob("*.jsonl"))
        assert derived_spools, "the derived run's documents must be spooled too"
    finally:
        session.close()

    with ServerProcess(tmp_path, key) as server:
        catalog = open_catalog(server.uri, directory=tmp_path)
        first = sync(catalog, catalog.spool_dir)
        assert f"raw/{uid}" in first.written and not first.aborted
        run = catalog.raw[uid]
        assert run.stop["exit_status"] == "success"
        frames = np.asarray(run["primary"]["det_image"].read())
        assert len(frames) == 6  # every exposure, once
        assert np.all(frames.sum(axis=(1, 2, 3)) > 0)  # the frame files survived the partial copy's deletion
        derived = [catalog.processed[p.stem] for p in derived_spools]
        assert all(d.start["parent_uids"] == [uid] and d.stop is not None for d in derived)
        assert len(derived[0]["primary"].read()["two_theta"]) == 6
        assert not list(catalog.spool_dir.rglob("*.jsonl"))
        second = sync(catalog, catalog.spool_dir)
        assert not (second.written or second.already_complete or second.aborted)
        assert len(catalog.raw[uid]["primary"]["det_image"].read()) == 6
        catalog.close()


RECORDER = textwrap.dedent("""
    import sys
    from bluesky.plans import count
    from xrd_bluesky.cli.session import build_session
    from xrd_bluesky.sim_devices import BeamlineConfig

    session = build_session(directory=sys.argv[1], config=BeamlineConfig(detector="Pilatus100k", seed=1))
    bl = session.beamline

    def announce(name, doc):
        if name == "event":
            print("EVENT", doc["seq_num"], flush=True)

    session.RE.subscribe(announce)
    session.RE(count([bl.detector, bl.i0], num=1000, delay=0.05))
""")


def test_recorder_killed_mid_run_leaves_a_valid_spool_and_sync_closes_the_run(tmp_path, monkeypatch):
    """The recorder and ``xrd-bluesky sync`` run in child processes, and the result is
    read through ``xrd-bluesky serve``: a second embedded server in this process would
    replace the API key of the session's (tiled keeps one single-user key per process)."""
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    data = tmp_path / "data"
    recorder = subprocess.Popen([sys.executable, str(script), str(data)], stdout=subprocess.PIPE, text=True)
    announced = 0
    for line in recorder.stdout:
        if line.startswith("EVENT"):
            announced = int(line.split()[1])
            if announced == 20:
                recorder.send_signal(signal.SIGKILL)
                break
    recorder.wait()
    spools = list((data / "spool" / "raw").glob("*.jsonl"))
    assert len(spools) == 1
    documents = list(read_spool(spools[0]))  # raises on any line that is not a document
    assert [n for n, _ in documents].count("event") >= announced
    assert documents[-1][0] != "stop"

    synced = subprocess.run([sys.executable, "-m", "xrd_bluesky.cli.main", "sync", "--directory", str(data)],
                            capture_output=True, text=True, timeout=300)
    assert synced.returncode == 0 and "closed with exit_status 'abort'" in synced.stdout, synced.stderr
    key = secrets.token_hex(16)
    monkeypatch.setenv("TILED_API_KEY", key)
    with ServerProcess(data, key) as server:
        catalog = open_catalog(server.uri, directory=data)
        run = catalog.raw[documents[0][1]["uid"]]
        assert run.stop["exit_status"] == "abort"
        assert len(run["primary"].read()["I0_counts"]) >= announced
        assert sync(catalog, catalog.spool_dir).written == []


def test_a_flush_waits_for_what_was_queued_not_for_a_run_still_recording(catalog, tmp_path):
    """A run-start lookup waits for the session's uploads (``LiveInputs.settle`` flushes
    the writers): it waits for the documents queued before it, not for those a run
    being recorded keeps adding (a queue that never empties would hold it up until its
    timeout). Every event still reaches the catalog."""
    from event_model import compose_run

    writer = SpoolingWriter(catalog.raw, tmp_path / "spool", upload_lock=catalog.upload_lock)
    bundle = compose_run()
    writer("start", bundle.start_doc)
    stream = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "sim", "units": "mm"}})
    writer("descriptor", stream.descriptor_doc)
    recording, sent = threading.Event(), []

    def record():  # keep about 100 documents waiting: the uploader stays behind
        while recording.is_set():
            if writer.depth < 100:
                writer("event", stream.compose_event(data={"x": float(len(sent))}, timestamps={"x": time.time()}))
                sent.append(len(sent))
            else:
                time.sleep(0.001)

    recording.set()
    thread = threading.Thread(target=record)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while writer.depth < 90:
            assert time.monotonic() < deadline, "the queue never filled"
            time.sleep(0.01)
        assert writer.flush(timeout_s=60), "flush waited for the documents queued after it was called"
        assert writer.depth > 0  # the run is still being recorded
    finally:
        recording.clear()
        thread.join()
    writer("stop", bundle.compose_stop())
    writer.close()
    assert list(catalog.raw[bundle.start_doc["uid"]]["primary"].read()["x"]) == [float(i) for i in sent]


def test_a_document_is_spooled_while_the_disk_is_still_syncing(tmp_path, monkeypatch):
    """An fsync can take a second while a detector streams to the same disk: the
    writer's periodic sync must not hold the caller (the RunEngine) meanwhile. The slow
    disk is the one fault faked here (``os.fsync`` held until released)."""
    import xrd_bluesky.store.spool as spool

    released, syncing = threading.Event(), threading.Event()

    def slow_fsync(fd):
        syncing.set()
        released.wait(10)

    monkeypatch.setattr(spool.os, "fsync", slow_fsync)
    writer = SpoolingWriter(None, tmp_path, fsync_interval_s=0.01)
    try:
        writer("start", {"uid": "0" * 32, "time": 0.0})
        assert syncing.wait(5), "the periodic sync never started"
        started = time.monotonic()
        writer("descriptor", {"uid": "d", "run_start": "0" * 32, "name": "primary", "data_keys": {}})
        assert time.monotonic() - started < 1.0
        released.set()
    finally:
        released.set()
        writer.close(timeout_s=1)
    lines = list(read_spool(next(tmp_path.glob("*.jsonl"))))
    assert [name for name, _ in lines] == ["start", "descriptor"]


def test_a_fast_detector_costs_the_catalog_a_few_requests_not_two_per_event(catalog, beamline, RE, tmp_path):
    """Documents that queued since the last upload (a detector faster than the upload
    interval) go up together: a request per stream and stream resource for all of them,
    not two per event as before. The run reads back whole: every event's readings and
    every frame, through the catalog."""
    det = beamline.detector
    frames = np.random.default_rng(3).poisson(2.0, (3, *det.response.shape)).astype(np.int32)
    det.use_prerendered(frames)
    docs = []
    try:
        RE(count([det, beamline.i0], num=60), lambda name, doc: docs.append((name, doc)))
    finally:
        det.use_prerendered(None)
    writer = SpoolingWriter(catalog.raw, tmp_path / "spool", upload_lock=catalog.upload_lock, upload_interval_s=1.0)
    with RequestCounter(catalog.client) as requests:
        for name, doc in docs:
            writer(name, doc)
        writer.close()
    assert requests.count < 20  # document by document: two per event, 120 for the events alone
    primary = catalog.raw[docs[0][1]["uid"]]["primary"]
    events = [doc for name, doc in docs if name == "event"]
    assert list(primary.read()["I0_counts"]) == [event["data"]["I0_counts"] for event in events]
    image = primary[det.image_key].read()
    recorded = image.reshape(-1, *det.response.shape)
    assert len(recorded) == 60 * int(det.num_frames.get())
    for i, frame in enumerate(recorded):
        np.testing.assert_array_equal(frame, frames[i % len(frames)])


def test_a_stop_or_a_flush_does_not_wait_for_the_upload_interval(catalog, tmp_path):
    """The interval that lets documents go up together never holds up a caller that
    waits for them: a flush (a run-start lookup) or a run's stop uploads at once."""
    from event_model import compose_run

    writer = SpoolingWriter(catalog.raw, tmp_path / "spool", upload_lock=catalog.upload_lock, upload_interval_s=600)
    bundle = compose_run()
    stream = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "sim", "units": "mm"}})
    try:
        for name, doc in [("start", bundle.start_doc), ("descriptor", stream.descriptor_doc)]:
            writer(name, doc)
        for x in (1.0, 2.0):
            writer("event", stream.compose_event(data={"x": x}, timestamps={"x": time.time()}))
        started = time.monotonic()
        assert writer.flush(timeout_s=60)
        assert list(catalog.raw[bundle.start_doc["uid"]]["primary"].read()["x"]) == [1.0, 2.0]
        writer("event", stream.compose_event(data={"x": 3.0}, timestamps={"x": time.time()}))
        writer("stop", bundle.compose_stop())
        assert time.monotonic() - started < 60
    finally:
        writer.close()
    run = catalog.raw[bundle.start_doc["uid"]]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert list(run["primary"].read()["x"]) == [1.0, 2.0, 3.0]
