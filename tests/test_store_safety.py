"""Recovery and safety of the store (issue "Never a silent wrong result"): ``sync`` goes
on past a corrupt spool file and reports it; a uid from a document or a user's argument
never becomes a path, a Tiled key or a URL unless it is a plain run uid; an unreachable
catalog is reported within seconds; ``serve`` listens where it is told or nowhere."""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
import uuid

import pytest
from event_model import compose_run

from xrd_bluesky.cli import main
from xrd_bluesky.errors import MissingMetadataError, UsageError
from xrd_bluesky.schema.documents import UnsafeUidError, check_uid
from xrd_bluesky.store import lineage, open_catalog
from xrd_bluesky.store.catalog import CatalogUnavailableError, stored_run
from xrd_bluesky.store.server import listening_socket, serve
from xrd_bluesky.store.spool import SUFFIX, encode
from xrd_bluesky.store.sync import sync
from xrd_bluesky.store.writer import tiled_writer

#: Uids that must never name a file, a Tiled key or a URL.
BAD_UIDS = ["../escape", "../../etc/passwd", "/etc/passwd", "a\x00b", "", "x" * 1000]
BAD_IDS = ["parent", "grandparent", "absolute", "nul", "empty", "1000-chars"]
#: The longest an unreachable catalog may take to be reported in these tests (s); the
#: goal is 5 s, and a loaded test machine gets some slack.
UNREACHABLE_BOUND_S = 8.0


def run_documents(uid: str | None = None, *, stop: bool = True) -> list[tuple[str, dict]]:
    """The documents of a small run (two events), closed or not."""
    bundle = compose_run(uid=uid, metadata={"purpose": "store safety test"})
    descriptor = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "test"}})
    docs = [("start", bundle.start_doc), ("descriptor", descriptor.descriptor_doc)]
    docs += [("event", descriptor.compose_event(data={"x": float(i)}, timestamps={"x": time.time()}, seq_num=i + 1))
             for i in range(2)]
    return docs + ([("stop", bundle.compose_stop())] if stop else [])


def spool(folder, name: str, documents: list[tuple[str, dict]], mtime: float | None = None):
    """Write ``documents`` to spool file ``folder/name`` (modified at ``mtime``, if given)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"".join(encode(n, d) for n, d in documents))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def partial_run(container, uid: str) -> None:
    """A run in ``container`` that has a start but no stop (as a killed upload leaves it)."""
    tiled_writer(container, 1)("start", run_documents(uid)[0][1])


def files_under(directory) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# -- one validator of run uids ---------------------------------------------------------

@pytest.mark.parametrize("value", BAD_UIDS + [None, 7, "a/b", "a\\b", "..", ".", "-rf", "a..b", "a b", "é", "%%%%%"])
def test_a_uid_that_is_not_a_plain_run_uid_is_refused_naming_it_and_its_origin(value):
    with pytest.raises(UnsafeUidError, match="the test's argument") as raised:
        check_uid(value, "the test's argument")
    assert isinstance(raised.value, MissingMetadataError)
    assert repr(value)[:20] in str(raised.value)


@pytest.mark.parametrize("value", ["c5a30b04-3a09-4ce5-82e8-574ef9124332", "run-1", "abc_1.2", "u", "x" * 128])
def test_run_uids_pass(value):
    assert check_uid(value, "the test's argument") == value


# -- sync ------------------------------------------------------------------------------

def test_sync_skips_a_corrupt_spool_file_reports_it_and_syncs_the_others(catalog, tmp_path):
    """Corrupt files (older, so seen first) among a complete and an unfinished run: the two
    good runs are written, each bad file is named with its reason and stays in the spool."""
    raw = tmp_path / "spool" / "raw"
    raw.mkdir(parents=True)
    old = time.time() - 100
    names = {kind: f"{uuid.uuid4()}{SUFFIX}" for kind in ("garbage-line", "not-utf8", "empty", "no-start", "renamed")}
    contents = {"garbage-line": encode(*run_documents(names["garbage-line"].removesuffix(SUFFIX))[0]) + b"{not json\n",
                "not-utf8": b"\xff\xfe\x00\x01\n", "empty": b"", "no-start": encode(*run_documents()[1]),
                "renamed": b"".join(encode(n, d) for n, d in run_documents())}
    for i, (kind, content) in enumerate(contents.items()):
        (raw / names[kind]).write_bytes(content)
        os.utime(raw / names[kind], (old + i, old + i))
    names["unreadable"] = f"{uuid.uuid4()}{SUFFIX}"
    (raw / names["unreadable"]).mkdir()
    complete, unfinished = run_documents(), run_documents(stop=False)
    good = [doc[0][1]["uid"] for doc in (complete, unfinished)]
    for i, documents in enumerate((complete, unfinished)):
        spool(raw, f"{good[i]}.jsonl", documents, mtime=old + 10 + i)

    report = sync(catalog, tmp_path / "spool")
    assert report.written == [f"raw/{uid}" for uid in good] and report.aborted == [f"raw/{good[1]}"]
    assert catalog.raw[good[0]].stop["exit_status"] == "success"
    assert catalog.raw[good[1]].stop["exit_status"] == "abort"
    assert len(catalog.raw[good[0]]["primary"].read()["x"]) == 2
    assert not report.ok and len(report.failed) == len(names)
    reasons = {"garbage-line": "line 2 is not a valid document", "not-utf8": "line 1 is not a valid document",
               "empty": "does not begin with a start document", "no-start": "does not begin with a start document",
               "renamed": "not the run its name says", "unreadable": "Is a directory"}
    printed = "\n".join(report.lines())
    assert f"NOT SYNCED, left in the spool: {len(names)}" in printed
    for kind, name in names.items():
        line, = [f for f in report.failed if f.startswith(f"raw/{name}: ")]
        assert reasons[kind] in line, line
        assert f"raw/{name}" in printed and (raw / name).exists()
    assert sorted(p.name for p in raw.iterdir()) == sorted(names.values())
    again = sync(catalog, tmp_path / "spool")
    assert not again.written and len(again.failed) == len(names)


@pytest.mark.parametrize("bad", BAD_UIDS, ids=BAD_IDS)
def test_sync_refuses_a_spooled_uid_that_is_not_a_run_uid_and_touches_nothing(catalog, tmp_path, bad):
    raw = tmp_path / "spool" / "raw"
    documents = run_documents()
    documents = [(n, {**d, "uid": bad} if n == "start" else {**d, "run_start": bad} if "run_start" in d else d)
                 for n, d in documents]
    spool(raw, "spooled.jsonl", documents)
    before = (len(catalog.raw), len(catalog.processed), files_under(tmp_path))
    report = sync(catalog, tmp_path / "spool")
    assert not report.written and not report.ok
    line, = report.failed
    assert line.startswith("raw/spooled.jsonl: ") and ("is not a run uid" in line or "1000 characters" in line), line
    assert (len(catalog.raw), len(catalog.processed), files_under(tmp_path)) == before


def test_a_spooled_uid_climbing_out_of_raw_cannot_delete_a_processed_run(catalog, tmp_path):
    """``../processed/<victim>`` (36 characters, the length of a uid) would be looked up,
    found without a stop and deleted as a "partial copy"; it is refused instead."""
    victim = f"victim-{secrets.token_hex(8)}"
    escaping = f"../processed/{victim}"
    assert len(escaping) == 36
    partial_run(catalog.processed, victim)
    try:
        documents = [(n, {**d, "uid": escaping}) if n == "start" else (n, d) for n, d in run_documents()[:1]]
        spool(tmp_path / "spool" / "raw", "evil.jsonl", documents)
        report = sync(catalog, tmp_path / "spool")
        assert "is not a run uid" in report.failed[0] and not report.written
        assert stored_run(catalog.processed, victim) is not None
    finally:
        stored_run(catalog.processed, victim).delete(recursive=True, external_only=False)


def test_sync_never_takes_a_run_whose_uid_merely_begins_with_the_spooled_one(catalog, tmp_path):
    """Run ``run-X`` spooled while ``run-X0`` is partial in the catalog: a lookup by
    partial uid would find (and delete) ``run-X0``; sync writes ``run-X`` beside it."""
    uid = f"run-{secrets.token_hex(4)}"
    partial_run(catalog.raw, f"{uid}0")
    spool(tmp_path / "spool" / "raw", f"{uid}.jsonl", run_documents(uid))
    report = sync(catalog, tmp_path / "spool")
    assert report.written == [f"raw/{uid}"] and report.ok
    assert stored_run(catalog.raw, f"{uid}0") is not None and stored_run(catalog.raw, uid).stop is not None


# -- replay and lineage commands -------------------------------------------------------

@pytest.fixture
def served(catalog, monkeypatch, tmp_path):
    """Arguments that open the session catalog, served, from a command."""
    monkeypatch.setenv("TILED_API_KEY", catalog.uri.split("api_key=")[1])
    return ["--catalog", catalog.uri.split("?")[0], "--directory", str(tmp_path)]


@pytest.mark.parametrize("bad", BAD_UIDS, ids=BAD_IDS)
def test_commands_refuse_a_uid_argument_that_is_not_a_run_uid(catalog, served, tmp_path, capsys, bad):
    before = (len(catalog.raw), len(catalog.processed))
    commands = [["lineage", bad], ["replay", bad], ["replay", "abcdef12", "--calibration", bad],
                ["replay", "abcdef12", "--gain-map", bad], ["replay", "--search", "purpose=x", "--gain-map", bad]]
    for command in commands:
        assert main(command + served) == 2, command
        err = capsys.readouterr().err
        assert "UnsafeUidError" in err and (repr(bad)[:20] in err), (command, err)
    assert (len(catalog.raw), len(catalog.processed)) == before and files_under(tmp_path) == []


def test_commands_name_a_short_or_unknown_uid(served, capsys):
    assert main(["lineage", "ab"] + served) == 2
    assert "run uid 'ab' names no single run" in capsys.readouterr().err
    assert main(["lineage", "abcdef-not-in-the-catalog"] + served) == 2
    assert "abcdef-not-in-the-catalog is in neither the raw nor the processed catalog" in capsys.readouterr().err
    assert main(["replay", "abcdef-not-in-the-catalog"] + served) == 2
    assert "raw run abcdef-not-in-the-catalog is not in the catalog" in capsys.readouterr().err


def test_lineage_refuses_a_uid_a_start_document_names(catalog):
    uid = str(uuid.uuid4())
    start = run_documents(uid)[0][1]
    tiled_writer(catalog.processed, 1)("start", {**start, "analysis": "integration", "parent_uids": ["../raw/x"]})
    try:
        with pytest.raises(UnsafeUidError, match=f"parent_uids of run {uid} '../raw/x' is not a run uid"):
            lineage(catalog, uid)
    finally:
        stored_run(catalog.processed, uid).delete(recursive=True, external_only=False)


# -- an unreachable catalog ------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers (hung, or a blackhole past
    the connection)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield f"http://127.0.0.1:{s.getsockname()[1]}/api/v1"


@pytest.mark.parametrize("kind", ["refused", "unknown host", "silent"])
def test_an_unreachable_catalog_is_reported_within_seconds(tmp_path, monkeypatch, silent_server, kind):
    monkeypatch.setenv("TILED_API_KEY", "secret")
    uri = {"refused": f"http://127.0.0.1:{_free_port()}/api/v1",
           "unknown host": "http://no-such-host.invalid:8000/api/v1", "silent": silent_server}[kind]
    t0 = time.monotonic()
    with pytest.raises(CatalogUnavailableError, match=f"the catalog at {re.escape(uri)} does not answer"):
        open_catalog(uri, directory=tmp_path)
    elapsed = time.monotonic() - t0
    print(f"unreachable catalog ({kind}) reported after {elapsed:.2f} s")
    assert elapsed < UNREACHABLE_BOUND_S


@pytest.mark.parametrize("uri", ["ftp://host/api/v1", "file:///tmp/catalog", "localhost:8000", "", "http://",
                                 "http://host:99999/api/v1", "https://[::1/api/v1"])
def test_a_catalog_uri_that_is_not_http_is_refused_at_once(tmp_path, uri):
    t0 = time.monotonic()
    with pytest.raises(UsageError, match=f"catalog URI {re.escape(repr(uri))} is not http"):
        open_catalog(uri, directory=tmp_path)
    assert time.monotonic() - t0 < 0.5


# -- serve -----------------------------------------------------------------------------

@pytest.mark.parametrize("port", [99999, 0, -1, 65536, True, "8000", 80.0])
def test_serve_refuses_a_port_that_is_not_a_tcp_port(tmp_path, monkeypatch, port):
    monkeypatch.setenv("TILED_API_KEY", "secret")
    with pytest.raises(UsageError, match=re.escape(f"--port {port!r} is not a TCP port")):
        serve(tmp_path, port=port)
    assert files_under(tmp_path) == []


def test_serve_command_refuses_port_99999(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TILED_API_KEY", "secret")
    try:
        status = main(["serve", "--directory", str(tmp_path), "--port", "99999"])
    except SystemExit as exc:  # the command line's own check of --port, before serve()
        status = exc.code
    assert status == 2 and "--port" in capsys.readouterr().err and files_under(tmp_path) == []


@pytest.mark.parametrize("host, reason", [("999.1.1.1", "neither an IP address nor a known host name"),
                                          ("", "neither an IP address nor a known host name"),
                                          ("192.0.2.1", "not an address of this machine")])
def test_serve_refuses_a_host_it_cannot_listen_on(tmp_path, monkeypatch, host, reason):
    monkeypatch.setenv("TILED_API_KEY", "secret")
    with pytest.raises(UsageError, match=reason):
        serve(tmp_path, host=host, port=_free_port())
    assert files_under(tmp_path) == []


def test_serve_refuses_a_taken_port_before_opening_the_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("TILED_API_KEY", "secret")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot serve on 127.0.0.1:{port}: the port is taken"):
            serve(tmp_path, port=port)
    assert files_under(tmp_path) == []


def test_the_socket_serve_listens_on_is_bound_where_asked():
    port = _free_port()
    with listening_socket("127.0.0.1", port) as sock:
        assert sock.getsockname() == ("127.0.0.1", port)


def test_a_second_embedded_catalog_leaves_the_first_usable(catalog, tmp_path):
    """Tiled's authentication is process-wide: a second embedded server with its own
    random API key made the first answer 401 to its clients (a session opening a
    catalog next to another). One key per process keeps both usable."""
    other = open_catalog(directory=tmp_path)
    try:
        assert list(other.raw) == []
        list(catalog.raw)  # 401 "Invalid API key" before
    finally:
        other.close()
    list(catalog.raw)
