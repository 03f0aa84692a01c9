"""Live analysis on another host: documents published through bluesky's 0MQ proxy
(msgpack, never pickle) and analysed by ``xrd-bluesky worker``.

The end-to-end test runs the real processes on loopback: ``bluesky-0MQ-proxy``, a
RunEngine session (a child process), the worker (``python -m xrd_bluesky.cli.main worker``,
killed with SIGKILL mid-scan and restarted) and the served catalog (``xrd-bluesky
serve``).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections import OrderedDict
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from conftest import TEST_DETECTOR
from test_replay import assert_same_results
from tiled.queries import Contains

from xrd_bluesky.cli.session import build_session
from xrd_bluesky.plans import multi_position_count
from xrd_bluesky.sim_devices import BeamlineConfig
from xrd_bluesky.store import open_catalog
from xrd_bluesky.store.server import API_KEY_VARIABLE
from xrd_bluesky.worker import WORKER_KEY
from xrd_bluesky.zmq_link import (
    DocumentReceiver,
    ZmqLinkError,
    decode_message,
    pack_document,
    unpack_document,
)
from xrd_bluesky_bench.testing import ServerProcess

POSITIONS = [(0.0, 0.0, 300.0), (12.0, -8.0, 260.0)]
#: Exposures of the run during which the worker is killed, and the one it is killed at.
LONG_RUN_EXPOSURES, KILLED_AT = 3, 2
#: Start-document keys in which the worker's derived run differs from the session's.
OWN_KEYS = {"uid", "time", WORKER_KEY}


# -- the codec -------------------------------------------------------------------------
def test_documents_cross_the_link_bit_for_bit():
    """Arrays (any dtype, byte order, layout, 0-d, empty), NumPy scalars and Python
    floats (NaN payloads, -0.0, subnormals) come back with the same bytes and types."""
    nan_payload = np.array([0x7FF8000000000123], np.uint64).view(np.float64)
    arrays = {"frame": np.arange(12, dtype=np.uint16).reshape(3, 4),
              "q": np.concatenate([nan_payload, [0.1, -np.inf, -0.0, 5e-324]]),
              "f32": np.array([0.1, np.nan], np.float32), "big_endian": np.arange(3, dtype=">i4"),
              "strided": np.arange(20.0).reshape(4, 5)[::2, ::-2], "zero_d": np.array(3.5),
              "empty": np.zeros((0, 3)), "complex": np.array([1 + 2j], np.complex64),
              "labels": np.array(["Ce", "O2"]), "mask": np.array([True, False]),
              "when": np.array(["2026-01-01T00:00"], dtype="datetime64[s]")}
    scalars = {"f64": np.float64(0.1), "f32": np.float32(0.1), "i64": np.int64(-3), "u8": np.uint8(255),
               "flag": np.bool_(True), "text": np.str_("CeO2")}
    floats = {"nan": float(nan_payload[0]), "minus_zero": -0.0, "subnormal": 5e-324, "exposure": 0.1}
    doc = {"uid": "u", "seq_num": 2**63 - 1, "low": -(2**63), "none": None, "raw": b"\x00\xff",
           "tuple": (1, 2.5, "a"), "ordered": OrderedDict(b=1, a=2), "data": arrays, "scalars": scalars,
           "floats": floats}
    back = unpack_document(pack_document(doc))
    for key, array in arrays.items():
        got = back["data"][key]
        assert type(got) is np.ndarray and got.dtype.str == array.dtype.str and got.shape == array.shape, key
        assert got.tobytes() == array.tobytes(), key
    for key, scalar in scalars.items():
        got = back["scalars"][key]
        assert type(got) is type(scalar) and got.tobytes() == scalar.tobytes(), key
    for key, value in floats.items():
        assert struct.pack("<d", back["floats"][key]) == struct.pack("<d", value), key
    assert back["tuple"] == [1, 2.5, "a"] and type(back["ordered"]) is dict and back["ordered"] == {"b": 1, "a": 2}
    assert {k: back[k] for k in ("uid", "seq_num", "low", "none", "raw")} == \
        {k: doc[k] for k in ("uid", "seq_num", "low", "none", "raw")}


def test_what_pickle_or_nothing_could_carry_is_never_sent():
    with pytest.raises(ZmqLinkError, match="object.*never sent"):
        pack_document({"data": {"x": np.array([1, "a"], dtype=object)}})
    with pytest.raises(ZmqLinkError, match="structured dtype"):
        pack_document({"data": {"x": np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")])}})
    with pytest.raises(ZmqLinkError, match="cannot be encoded"):
        pack_document({"seq_num": 2**64})
    with pytest.raises(ZmqLinkError, match="cannot be sent"):
        pack_document({"path": Path("/tmp")})


def forged_array(dtype: str, shape: list, raw: bytes) -> bytes:
    """A msgpack document whose array extension says what it likes."""
    return msgpack.packb({"x": msgpack.ExtType(1, msgpack.packb([dtype, shape, raw]))})


@pytest.mark.parametrize("message, reason", [
    (b" start " + pickle.dumps({"uid": "x"}), "a pickle, which is never loaded"),
    (b"no-spaces-at-all", "not a bluesky document message"),
    (b" evil " + pack_document({"uid": "x"}), "unknown document type 'evil'"),
    (b" start " + pack_document({"uid": "x", "time": 1.0})[:-4], "cannot be read as msgpack"),
    (b" start " + msgpack.packb([1, 2]), "a msgpack list, not a map"),
    (b" start " + forged_array("|O", [1], bytes(8)), "Python objects are never sent"),
    (b" start " + forged_array("<f8", [3], bytes(8)), "holds 8 bytes"),
    (b" start " + msgpack.packb({"x": msgpack.ExtType(42, b"")}), "unknown msgpack extension type 42"),
])
def test_malformed_messages_are_refused_with_the_reason(message, reason):
    with pytest.raises(ZmqLinkError, match=re.escape(reason)):
        decode_message(message)


class Records(logging.Handler):
    """The messages a logger emits while in the ``with`` block (the suite runs with
    ``-p no:logging``)."""

    def __init__(self, name: str):
        super().__init__()
        self.messages: list[str] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> Records:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)


def test_receiver_logs_and_skips_malformed_messages_and_keeps_running():
    """A pickle and garbage bytes between documents: each logged with its reason and
    skipped; the documents after them are dispatched."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    good = {"uid": "run-1", "time": 1.0, "data": np.arange(3.0)}
    received = []
    receiver = DocumentReceiver(f"127.0.0.1:{port}")

    def collect(name, doc):
        received.append((name, doc))
        if len(received) == 2:  # the second came after a whole batch, malformed messages first
            receiver.stop_soon()

    receiver.subscribe(collect)
    done = threading.Event()

    def publish():  # repeatedly: messages before the subscription arrives are dropped (slow joiner)
        deadline = time.monotonic() + 30
        while not done.wait(0.05):
            if time.monotonic() > deadline:
                receiver.stop_soon()
                return
            for message in (b" start " + pickle.dumps(good), b"\x93garbage", b" start " + pack_document(good)):
                pub.send(message)

    sender = threading.Thread(target=publish)
    with Records("xrd_bluesky.zmq_link") as records:
        sender.start()
        try:
            receiver.start()
        finally:
            done.set()
            sender.join()
            pub.close()
            context.destroy()
    assert len(received) == 2, records.messages
    for name, doc in received:
        assert name == "start" and doc["uid"] == "run-1" and doc["data"].tobytes() == good["data"].tobytes()
    assert any("a pickle, which is never loaded" in m for m in records.messages), records.messages
    assert any("not a bluesky document message" in m for m in records.messages), records.messages
    assert receiver.skipped >= 2


# -- the processes -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    """A child process whose output (stdout and stderr) a thread collects line by line."""

    def __init__(self, command: list[str], env: dict, stdin: bool = False):
        self.command = command
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE if stdin else None, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env={**env, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def find(self, pattern: str, after: int = 0) -> tuple[int, re.Match] | None:
        """The first line from index ``after`` matching ``pattern``: (index, match)."""
        for i, line in enumerate(self.lines[after:], start=after):
            if (m := re.search(pattern, line)) is not None:
                return i, m
        return None

    def wait_for(self, pattern: str, after: int = 0, timeout_s: float = 120.0) -> tuple[int, re.Match]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while (found := self.find(pattern, after)) is None:
                if self._ended or time.monotonic() > deadline:
                    break
                self._changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        assert found is not None, \
            f"{pattern!r} not in the output of {self.command[:4]}:\n" + "\n".join(self.lines[-40:])
        return found

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait(self, timeout_s: float = 60.0) -> int:
        """The exit status, once the process has ended and all its output is read."""
        status = self.process.wait(timeout_s)
        with self._changed:
            self._changed.wait_for(lambda: self._ended, timeout_s)
        return status

    def end(self, signum: int = signal.SIGKILL, timeout_s: float = 60.0) -> int:
        """Send ``signum`` unless the process has ended; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.wait(timeout_s)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A served catalog (``xrd-bluesky serve``), its data directory (sessions record
    their frames there, where the server may read them), the environment of the
    processes using it, and a client (which made the catalog's containers)."""
    directory = tmp_path_factory.mktemp("served")
    key = secrets.token_hex(16)
    with ServerProcess(directory, key) as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv(API_KEY_VARIABLE, key)
        catalog = open_catalog(server.uri, directory=tmp_path_factory.mktemp("reader"))
        yield server, directory, {**os.environ, "NUMEXPR_NUM_THREADS": "2"}, catalog


def test_session_publishes_every_document_and_does_not_analyse(served):
    """``build_session(publish_to=..., analyse=False)``: every document arrives,
    msgpack-decoded, equal to the one the RunEngine emitted; the raw run is in the
    catalog and no derived run is made."""
    server, directory, env, _ = served
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    session = build_session(directory=directory, uri=server.uri, config=BeamlineConfig(detector=TEST_DETECTOR, seed=7),
                            publish_to=f"127.0.0.1:{port}", analyse=False)
    try:
        assert session.router is None
        emitted = []
        session.RE.subscribe(lambda name, doc: emitted.append((name, doc)))
        # 0MQ's slow joiner: our subscription reaches the publisher once this (bound)
        # socket has taken the connection in, which it does while polled
        assert not sub.poll(1000)
        bl = session.beamline
        bl.sample_changer.slot.put("glass")
        uid, = session.RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, POSITIONS[:1],
                                               shutter=bl.source.shutter, energy=bl.source.energy))
        received = []
        while (not received or received[-1][0] != "stop") and sub.poll(5000):
            received.append(decode_message(sub.recv()))
        np.testing.assert_equal(received, emitted)
        assert [name for name, _ in received].count("event") == 2  # the dark and one exposure
        assert session.catalog.raw[uid].stop["exit_status"] == "success"
        assert not list(session.catalog.processed.search(Contains("parent_uids", uid)))
    finally:
        session.close()
        sub.close()
        context.destroy()


RECORDER = textwrap.dedent("""
    import sys
    from xrd_bluesky.plans import calibration_scan, multi_position_count
    from xrd_bluesky.cli.session import build_session
    from xrd_bluesky.sim_devices import BeamlineConfig

    uri, directory, proxy_in, detector = sys.argv[1:5]
    positions, long_run, hold_at = {positions!r}, {long_run}, {hold_at}
    # first a calibration (not published), which the session and the worker then both use
    calibrator = build_session(uri=uri, directory=directory, config=BeamlineConfig(detector=detector, seed=7))
    bl = calibrator.beamline
    bl.sample_changer.slot.put("CeO2")
    calibrator.RE(calibration_scan(bl.detector, bl.stage, "CeO2", {calibration_positions!r}, shutter=bl.source.shutter,
                                   energy=bl.source.energy))
    calibrator.close()
    # publishes, and analyses in this process too: the in-process derived runs to compare with
    session = build_session(uri=uri, directory=directory, config=BeamlineConfig(detector=detector, seed=7),
                            publish_to=proxy_in)
    bl = session.beamline
    bl.sample_changer.slot.put("CeO2")
    primary, hold = set(), {{"at": None}}

    def hold_mid_scan(name, doc):  # the scan waits here while the test restarts the worker
        if name == "descriptor" and doc["name"] == "primary":
            primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in primary and doc["seq_num"] == hold["at"]:
            hold["at"] = None
            print("HELD", flush=True)
            sys.stdin.readline()

    session.RE.subscribe(hold_mid_scan)

    def measure(positions, num=1):
        uid, = session.RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, positions, num=num,
                                               shutter=bl.source.shutter, energy=bl.source.energy,
                                               sample=bl.sample_changer.sample().metadata()))
        print("RUN", uid, flush=True)

    print("READY", flush=True)
    sys.stdin.readline()
    measure(positions)
    hold["at"] = hold_at
    measure(positions[:1], num=long_run)
    measure(positions[:1])
    session.close()
""").format(positions=POSITIONS, long_run=LONG_RUN_EXPOSURES, hold_at=KILLED_AT,
           calibration_positions=[(0, 0, 230), (12, -10, 230), (-10, 8, 245), (6, 12, 220), (-12, -6, 250)])


def derived_runs(catalog, raw_uid: str) -> tuple[list, list]:
    """The derived runs of raw run ``raw_uid``: the session's, the workers'."""
    runs = list(catalog.processed.search(Contains("parent_uids", raw_uid)).values())
    return [r for r in runs if WORKER_KEY not in r.start], [r for r in runs if WORKER_KEY in r.start]


def wait_until(condition, what: str, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


def stop_of(run) -> dict | None:
    """A run's stop document; None while it has none (``run.stop`` raises then)."""
    return run.metadata.get("stop")


def worker_finished(catalog, raw_uid: str):
    """The worker's derived run of ``raw_uid`` once it has its stop document."""
    _, remote = derived_runs(catalog, raw_uid)
    return remote[0] if len(remote) == 1 and stop_of(remote[0]) is not None else None


def assert_analysed_alike(catalog, raw_uid: str):
    """The worker's derived run of ``raw_uid`` equals the session's: start document
    (but for uid, time and the worker's name), data keys, units, configuration, data."""
    (local,), (remote,) = derived_runs(catalog, raw_uid)
    assert local.stop["exit_status"] == remote.stop["exit_status"] == "success", (local.stop, remote.stop)
    assert {k: v for k, v in remote.start.items() if k not in OWN_KEYS} == \
        {k: v for k, v in local.start.items() if k not in OWN_KEYS}
    assert assert_same_results(local, remote) <= 1e-12
    return remote


def connect(worker: Child, proxy_in: int) -> None:
    """Publish pickles into the proxy until the worker logs refusing one: then it
    receives what the proxy forwards (and has shown that it skips a pickle)."""
    mark = len(worker.lines)
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.connect(f"tcp://127.0.0.1:{proxy_in}")
    try:
        deadline = time.monotonic() + 60
        while worker.find("a pickle, which is never loaded", after=mark) is None:
            assert time.monotonic() < deadline and worker.process.poll() is None, "\n".join(worker.lines[-20:])
            pub.send(b" start " + pickle.dumps({"uid": "not-a-run"}))
            time.sleep(0.2)
    finally:
        pub.close(linger=0)
        context.destroy()


def test_worker_analyses_as_the_session_and_reports_the_runs_it_missed(served, tmp_path):
    """Proxy, RunEngine and worker in three processes on loopback.

    The RunEngine's session analyses in-process too, so each raw run gets two derived
    runs from the same documents, made at the same time with the same catalog state:
    the session's (the live path every other test checks) and the worker's (marked
    ``live_worker``). They must be equal to 1e-12, and the worker's CeO2 rings must lie
    where Bragg's law puts them.

    Then the worker is SIGKILLed at the second exposure of a three-exposure run and
    restarted while the scan waits: the raw run still has every exposure (the session
    recorded it), the restarted worker does not analyse that run, names it once as
    missed and again when stopped (SIGTERM), and analyses the next run as the session
    does.
    """
    from xrd_bluesky.cli.demo import ring_checks
    from xrd_bluesky.science.sim.library import default_library

    server, directory, env, catalog = served
    proxy_in, proxy_out = free_port(), free_port()
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    worker_command = [sys.executable, "-m", "xrd_bluesky.cli.main", "worker", "--zmq", f"127.0.0.1:{proxy_out}",
                      "--catalog", server.uri, "--directory", str(tmp_path / "worker"), "--detector", TEST_DETECTOR]
    children = [Child([str(Path(sys.executable).with_name("bluesky-0MQ-proxy")), "--in-address",
                       f"127.0.0.1:{proxy_in}", "--out-address", f"127.0.0.1:{proxy_out}"], env)]
    try:
        proxy = children[0]
        proxy.wait_for("Use Ctrl")
        children.append(worker := Child(worker_command, env))
        children.append(recorder := Child([sys.executable, str(script), server.uri, str(directory),
                                           f"127.0.0.1:{proxy_in}", TEST_DETECTOR], env, stdin=True))
        worker.wait_for("listening to tcp://127.0.0.1")
        recorder.wait_for("READY", timeout_s=300)  # after its calibration
        connect(worker, proxy_in)
        time.sleep(0.5)  # the recorder's publisher connects to the proxy in the background too
        recorder.send("go")
        at, match = recorder.wait_for(r"^RUN (\S+)")
        first = match.group(1)
        recorder.wait_for("^HELD", after=at)
        wait_until(lambda: worker_finished(catalog, first), "the worker's analysis of the first run")
        assert worker.end(signal.SIGKILL) == -signal.SIGKILL

        children.append(restarted := Child(worker_command, env))
        restarted.wait_for("listening to tcp://127.0.0.1")
        connect(restarted, proxy_in)
        recorder.send("go")
        assert recorder.wait(180) == 0, "\n".join(recorder.lines[-30:])
        _, long_run, last = [m.group(1) for line in recorder.lines if (m := re.match(r"^RUN (\S+)$", line))]
        wait_until(lambda: worker_finished(catalog, last), "the restarted worker's analysis of the last run")
        assert restarted.end(signal.SIGTERM) == 0, "\n".join(restarted.lines[-30:])

        # the runs the worker saw from their start: analysed as the session did
        remote = assert_analysed_alike(catalog, first)
        assert remote.start[WORKER_KEY]["zmq"] == f"tcp://127.0.0.1:{proxy_out}"
        assert_analysed_alike(catalog, last)
        data = remote["primary"].read()
        for i in range(len(POSITIONS)):
            checks = ring_checks(*(np.asarray(data[k][i]) for k in ("two_theta", "intensity_2theta", "sigma_2theta")),
                                 default_library()["CeO2"], 17.0)
            assert len(checks) >= 3 and max(abs(c.error_deg) for c in checks) < 0.01, checks

        # the run the worker was killed in: raw data complete, reported missed by the restarted worker
        raw = catalog.raw[long_run]
        assert raw.stop["exit_status"] == "success"
        assert np.asarray(raw["primary"]["det_image"].read()).shape[0] == LONG_RUN_EXPOSURES
        local, remote = derived_runs(catalog, long_run)
        assert len(local) == 1 and local[0].stop["exit_status"] == "success"
        assert all(stop_of(r) is None for r in remote)  # only the killed worker's, unfinished
        reason = "not analysed: the worker joined it mid-run"
        logged = [line for line in restarted.lines if f"run {long_run} {reason}" in line]
        assert len(logged) == 1 and f"xrd-bluesky replay {long_run}" in logged[0], restarted.lines
        at, _ = restarted.wait_for("stopped; 1 missed run")
        assert re.search(rf"^  {long_run}  {reason}.*replay: xrd-bluesky replay {long_run}$",
                         restarted.lines[at + 1]), restarted.lines[at:]
    finally:
        for child in children:
            child.end()
