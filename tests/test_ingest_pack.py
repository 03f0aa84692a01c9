"""``xrd-bluesky ingest``: databroker-pack directories (written with suitcase-msgpack /
suitcase-jsonl in databroker-pack's layout, see ``pack_builders``) of runs recorded by
the ecosystem's devices become raw runs of the catalog, faithful (start, descriptors,
readings, exit status) with frames resolvable where they are or copied; twice changes
nothing; bad runs are named and skipped while the others are ingested, and no partial
run is ever left in the catalog."""

from __future__ import annotations

import argparse
import json
import uuid

import h5py
import numpy as np
import pytest
from pack_builders import aborted_image_run, detector, image_run, scalar_run, write_pack

from xrd_bluesky.cli import ingest as ingest_command
from xrd_bluesky.cli.ingest import add_parser, ingest
from xrd_bluesky.frames.hdf5 import path_from_uri
from xrd_bluesky.frames.stream import StreamFrames
from xrd_bluesky.sources.pack import PackError, open_pack
from xrd_bluesky.store.catalog import stored_run

SHAPE = (16, 24)


@pytest.fixture
def area(beamline_data):
    """A fresh directory under the catalog's storage root (the embedded server reads it)."""
    path = beamline_data / f"ingest-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


@pytest.fixture
def cli(catalog, monkeypatch):
    """``xrd-bluesky ingest ARGV`` on the session catalog (served: --catalog URI)."""
    monkeypatch.setenv("TILED_API_KEY", catalog.uri.split("api_key=")[1])

    def ingest_cli(*argv) -> int:
        parser = argparse.ArgumentParser(prog="xrd-bluesky")
        add_parser(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["ingest", *map(str, argv), "--catalog", catalog.uri.split("?")[0],
                                  "--directory", str(catalog.frames_dir.parent)])
        return args.func(args)
    return ingest_cli


def plain(doc: dict) -> dict:
    """``doc`` as JSON has it (tuples as lists), as the catalog stores it."""
    return json.loads(json.dumps(doc))


def stored_frames(run) -> tuple[np.ndarray, list]:
    """The frames the stored run's StreamResources / StreamDatums (the catalog's form of
    its Resources / Datums) address, read by the package's reader, and their files."""
    streams, frames, files = StreamFrames(), [], []
    for name, doc in run.documents():
        if name == "stream_resource":
            streams.stream_resource(doc)
            files.append(path_from_uri(doc["uri"]))
        elif name == "stream_datum":
            span = streams.span(doc)
            frames += [span.ref(seq_num).read(1) for seq_num in range(span.seq_start, span.seq_stop)]
    return np.concatenate(frames), files


def test_a_msgpack_pack_moved_elsewhere_is_ingested_faithfully_once(RE, catalog, area, cli, capsys):
    """An image run, an aborted image run and a motor scan without frames, packed with
    suitcase-msgpack (paged events and datums) and their files moved since: with
    ``--root-map`` they are raw runs whose start, descriptors, readings and exit status
    are the recorded ones and whose frames (registered in place, not copied) read back
    exactly; one line per run and a total are printed; a second ingest changes nothing."""
    det, frames = detector("pil", area / "old", SHAPE)
    runs = [image_run(RE, det, 3, sample="LaB6"), aborted_image_run(RE, det, 2), scalar_run(RE, 4)]
    written = [np.stack(frames.given[:3]), np.stack(frames.given[3:])]
    pack = write_pack(area / "pack", runs)
    (area / "old").rename(area / "new")

    assert cli(pack, "--root-map", f"{area / 'old'}={area / 'new'}") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("total: 3 runs ingested (9 events, 5 frames), 0 already")
    expected = [("count", "3 events", "success"), ("aborted_count", "2 events", "abort"),
                ("scan", "4 events", "success")]
    for docs, line, (plan, events, status) in zip(runs, lines, expected):
        start, stop = docs[0][1], docs[-1][1]
        assert line.split()[:3] == [start["uid"], "scan_id", str(start["scan_id"])]
        assert f"  {plan}  {events}" in line and line.endswith(status)
        run = catalog.raw[start["uid"]]
        assert run.start == plain(start) and run.stop["exit_status"] == stop["exit_status"] == status
        descriptor = next(doc for name, doc in docs if name == "descriptor")
        stored = next(doc for name, doc in run.documents() if name == "descriptor")
        assert {device: c["data"] for device, c in stored["configuration"].items()} == \
            {device: c["data"] for device, c in plain(descriptor["configuration"]).items()}
        assert {k: (v["shape"], v["dtype"], v["source"]) for k, v in stored["data_keys"].items()} == \
            {k: (list(v["shape"]), v["dtype"], v["source"]) for k, v in descriptor["data_keys"].items()}
    for docs, expect in zip(runs[:2], written):
        got, files = stored_frames(catalog.raw[docs[0][1]["uid"]])
        np.testing.assert_array_equal(got, expect)
        assert all(f.is_relative_to(area / "new") for f in files) and files  # in place, not copied
        np.testing.assert_array_equal(catalog.raw[docs[0][1]["uid"]]["primary"]["pil_image"].read()[:, 0], expect)
    readings = catalog.raw[runs[2][0][1]["uid"]]["primary"].read()
    recorded = [doc["data"] for name, doc in runs[2] if name == "event"]
    for key in ("det", "motor"):
        np.testing.assert_array_equal(readings[key].values, [data[key] for data in recorded])

    count = len(catalog.raw)
    assert cli(pack, "--root-map", f"{area / 'old'}={area / 'new'}") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:3]] == [docs[0][1]["uid"] for docs in runs]
    assert all(line.endswith("already in the catalog: skipped") for line in lines[:3])
    assert lines[-1] == "total: 0 runs ingested (0 events, 0 frames), 3 already in the catalog, 0 skipped"
    assert len(catalog.raw) == count


def test_a_jsonl_pack_with_its_files_copied_into_it_and_a_beamline_spec(RE, catalog, area):
    """suitcase-jsonl documents (events and datums not paged), files copied into the pack
    (a root_map relative to it) under a beamline-specific spec: refused without its alias,
    read through it and, with ``copy``, copied into the catalog's data directory; the pack
    is untouched. A run packed without a stop document is closed as aborted, once."""
    det, frames = detector("pil", area / "beamline", SHAPE, spec="AD_HDF5_Pilatus_6idb")
    docs, unclosed = image_run(RE, det, 4), scalar_run(RE, 2)[:-1]
    pack_dir = write_pack(area / "pack", [docs, unclosed], document_format="jsonl", copy_external=True)
    uid = docs[0][1]["uid"]

    refused = ingest(catalog, open_pack(pack_dir))
    assert not refused.ok and "spec 'AD_HDF5_Pilatus_6idb'" in refused.skipped[0][1]
    assert stored_run(catalog.raw, uid) is None
    assert [r.uid for r in refused.ingested] == [unclosed[0][1]["uid"]] and refused.ingested[0].closed_by_ingest
    stop = catalog.raw[unclosed[0][1]["uid"]].stop
    assert stop["exit_status"] == "abort" and stop["num_events"] == {"primary": 2}
    report = ingest(catalog, open_pack(pack_dir, spec_aliases={"AD_HDF5_Pilatus_6idb": "AD_HDF5"}), copy=True)
    assert report.ok and [r.uid for r in report.ingested] == [uid] and report.ingested[0].frames == 4
    assert report.already == [unclosed[0][1]["uid"]]
    got, files = stored_frames(catalog.raw[uid])
    np.testing.assert_array_equal(got, np.stack(frames.given))
    assert files and all(f.is_relative_to(catalog.frames_dir / "ingested" / uid) for f in files)
    packed = list((pack_dir / "external_files").rglob("*.h5"))
    assert len(packed) == 1 and h5py.File(packed[0], "r")["/entry/data/data"].shape[0] == 4


def test_bad_runs_are_named_and_skipped_and_the_others_ingested(RE, catalog, area, cli, capsys):
    """A missing external file, a datum naming no resource, an unknown spec, too few
    frames in a file, documents that fail the schema, a file with no start document and
    one that is not JSON: each is skipped with a named error, the good run is ingested,
    the summary lists the skipped ones, the exit status is 1 and none of them is in the
    catalog even partly."""
    det, _ = detector("pil", area / "data", SHAPE)
    odd, _ = detector("odd", area / "data", SHAPE, spec="NOT_A_SPEC")
    good, missing, orphan, unknown, short, invalid = (image_run(RE, det, 2), image_run(RE, det, 2),
                                                      image_run(RE, det, 2), image_run(RE, odd, 2),
                                                      image_run(RE, det, 2), scalar_run(RE, 2))

    def resource_file(docs):
        resource = next(doc for name, doc in docs if name == "resource")
        return area / "data" / resource["resource_path"]

    resource_file(missing).unlink()
    with h5py.File(resource_file(short), "a") as f:
        data = f["/entry/data/data"][:1]
        del f["/entry/data/data"]
        f["/entry/data/data"] = data
    orphan = [(name, {**doc, "resource": "no-such-resource"} if name == "datum" else doc) for name, doc in orphan]
    invalid = [(name, {**doc, "time": "yesterday"} if name == "start" else doc) for name, doc in invalid]
    pack = write_pack(area / "pack", [good, missing, orphan, unknown, short, invalid], document_format="jsonl")
    (pack / "documents" / "no-start.jsonl").write_text(json.dumps(["descriptor", invalid[1][1]]) + "\n")
    (pack / "documents" / "garbage.jsonl").write_text("this is not JSON\n")
    with open(pack / "documents_manifest.txt", "a") as f:
        f.write("documents/no-start.jsonl\ndocuments/garbage.jsonl\n")

    assert cli(pack) == 1
    out = capsys.readouterr().out
    summary = out[out.index("total: "):].splitlines()
    assert summary[0] == "total: 1 runs ingested (2 events, 2 frames), 0 already in the catalog, 7 skipped"
    reasons = {"FrameSourceError: external file": missing, "FrameSourceError: datum": orphan,
               "FrameSourceError: resource": unknown, "CorruptFrameError": short, "PackError": invalid}
    for reason, docs in reasons.items():
        uid = docs[0][1]["uid"]
        line, = [s for s in summary if uid in s]
        assert f": {reason}" in line, line
        assert stored_run(catalog.raw, uid) is None
    assert "NOT_A_SPEC" in out and "never announces" not in out and "holds 1 frames" in out
    assert any("no-start.jsonl: PackError" in s and "start document" in s for s in summary)
    assert any("garbage.jsonl: PackError" in s for s in summary)
    assert catalog.raw[good[0][1]["uid"]].stop["exit_status"] == "success"


def test_a_run_the_catalog_refuses_half_way_is_not_left_in_it(RE, catalog, area, monkeypatch):
    """A write that fails after the start document reached the catalog is undone (and
    its copied files removed): the run is skipped with the catalog's reason, not partial."""
    det, _ = detector("pil", area / "data", SHAPE)
    docs = image_run(RE, det, 2)
    uid = docs[0][1]["uid"]
    real = ingest_command.tiled_writer

    def failing(container, batch_size):
        writer = real(container, batch_size)

        def write(name, doc):
            if name == "stop":
                raise RuntimeError("the server went read-only")
            writer(name, doc)
        return write

    monkeypatch.setattr(ingest_command, "tiled_writer", failing)
    report = ingest(catalog, open_pack(write_pack(area / "pack", [docs])), copy=True)
    assert not report.ok and "the server went read-only" in report.skipped[0][1]
    assert stored_run(catalog.raw, uid) is None
    assert not (catalog.frames_dir / "ingested" / uid).exists()


def test_what_is_not_a_pack_or_not_an_option_is_refused(tmp_path, cli):
    """A directory without catalog.yml, a spec alias onto no known spec and --copy with
    a remote catalog are refused before anything is written."""
    with pytest.raises(PackError, match="catalog.yml"):
        cli(tmp_path)
    with pytest.raises(SystemExit):
        cli(tmp_path, "--spec-alias", "X=AD_TIFF")
    with pytest.raises(ingest_command.UsageError, match="--copy"):
        cli(tmp_path, "--copy")
