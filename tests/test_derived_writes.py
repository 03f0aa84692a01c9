"""Derived runs are written whole at their stop, in one request where the server offers
the bulk write endpoint, and read back exactly as the analysis emitted them and as the
other write paths stored them.

A served catalog (``xrd-bluesky serve`` in a child process) receives the same derived
run three times: through the processed writer (the bulk write) into ``processed``,
written whole node by node from the client (the path for a stock Tiled server) into a
second container, and through the old path (a spooling writer streaming into
``TiledWriter``) into a third. A stock Tiled server gets the node-by-node path.
"""

from __future__ import annotations

import secrets

import httpx
import numpy as np
import pytest
from event_model import compose_run
from test_foreign_catalog import stock_server  # noqa: F401 (a fixture)

from xrd_bluesky.store import open_catalog
from xrd_bluesky.store import writer as writer_module
from xrd_bluesky.store.bulk_write import ROUTE
from xrd_bluesky.store.catalog import _RUN_CATALOG_SPEC
from xrd_bluesky.store.spool import encode
from xrd_bluesky.store.sync import sync
from xrd_bluesky.store.writer import SpoolingWriter, processed_writer
from xrd_bluesky_bench.common import RequestCounter
from xrd_bluesky_bench.testing import ServerProcess
from xrd_bluesky_bench.writes import (
    CLIENT_WHOLE_RUN_CONTAINER,
    REFERENCE_CONTAINER,
    holds_emitted,
    stored_equal,
)

BINS = 64
FRAMES = 4


def _array_key(units: str) -> dict:
    return {"dtype": "array", "dtype_numpy": "<f8", "shape": [BINS], "source": "xrd_bluesky", "units": units}


def _scalar_key(dtype: str, units: str = "") -> dict:
    return {"dtype": dtype, "shape": [], "source": "xrd_bluesky", "units": units}


def derived_run(seed: int) -> list[tuple[str, dict]]:
    """An integration-like derived run: per-frame patterns (with the NaN bins behind a
    beamstop), then stitched patterns, the last one final."""
    rng = np.random.default_rng(seed)
    q = np.linspace(0.5, 50.0, BINS)  # 1/nm
    bundle = compose_run(metadata={"purpose": "derived", "analysis": "integration", "parent_uids": ["r" * 8],
                                   "parameters": {"npt": BINS, "units": ["q_nm^-1"]}})
    docs = [("start", bundle.start_doc)]
    primary = bundle.compose_descriptor(name="primary", data_keys={
        "q": _array_key("1/nm"), "intensity_q": _array_key("1/sr"), "sigma_q": _array_key("1/sr"),
        "I0_counts": _scalar_key("number"), "position": _scalar_key("integer")})
    stitched = bundle.compose_descriptor(name="stitched", data_keys={
        "q": _array_key("1/nm"), "intensity": _array_key("1/sr"), "frames": _scalar_key("integer"),
        "final": _scalar_key("boolean")})
    docs += [("descriptor", primary.descriptor_doc), ("descriptor", stitched.descriptor_doc)]
    for i in range(FRAMES):
        intensity = 1e3 * np.exp(-q / 10) + rng.normal(0, 1, BINS)
        intensity[:3] = np.nan
        data = {"q": q, "intensity_q": intensity, "sigma_q": np.sqrt(np.abs(intensity)),
                "I0_counts": float(rng.uniform(9e5, 1e6)), "position": i % 3}
        docs.append(("event", primary.compose_event(data=data, timestamps={k: 1.0 + i for k in data})))
        if i % 2:
            data = {"q": q, "intensity": intensity / 2, "frames": i + 1, "final": i == FRAMES - 1}
            docs.append(("event", stitched.compose_event(data=data, timestamps={k: 1.0 + i for k in data})))
    docs.append(("stop", bundle.compose_stop()))
    return docs


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A served catalog with the other paths' containers beside ``processed``."""
    directory = tmp_path_factory.mktemp("served")
    key = secrets.token_hex(16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TILED_API_KEY", key)
        with ServerProcess(directory, key, startup_timeout_s=300) as server:
            catalog = open_catalog(server.uri, directory=directory)
            for container in (REFERENCE_CONTAINER, CLIENT_WHOLE_RUN_CONTAINER):
                catalog.client.create_container(container, specs=[_RUN_CATALOG_SPEC])
            yield server, catalog


def client_whole_run_writer(catalog, container: str) -> SpoolingWriter:
    """Derived runs written whole at their stop, node by node from the client (as into a
    stock Tiled server), into ``container``."""
    return SpoolingWriter(catalog.client[container], catalog.spool_dir / container, whole_runs=True, bulk=False)


def _write(writer, docs, requests: RequestCounter) -> int:
    before = requests.count
    for name, doc in docs:
        writer(name, doc)
    assert writer.flush()
    return requests.count - before


def test_a_derived_run_reads_back_as_emitted_and_as_the_other_paths_stored_it(served):
    _, catalog = served
    requests = RequestCounter(catalog.client)
    bulk = processed_writer(catalog)
    whole = client_whole_run_writer(catalog, CLIENT_WHOLE_RUN_CONTAINER)
    old = SpoolingWriter(catalog.client[REFERENCE_CONTAINER], catalog.spool_dir / "old", batch_size=100_000)
    try:
        docs = derived_run(seed=1)
        bulk_requests = _write(bulk, docs, requests)
        whole_requests = _write(whole, docs, requests)
        old_requests = _write(old, docs, requests)
        second = derived_run(seed=4)
        second_bulk_requests = _write(bulk, second, requests)
    finally:
        for writer in (bulk, whole, old):
            writer.close()
    uid = docs[0][1]["uid"]
    run = catalog.processed[uid]
    assert holds_emitted(run, docs)
    assert stored_equal(run, catalog.client[REFERENCE_CONTAINER][uid], docs)
    assert stored_equal(run, catalog.client[CLIENT_WHOLE_RUN_CONTAINER][uid], docs)
    assert holds_emitted(catalog.processed[second[0][1]["uid"]], second)
    intensity = np.asarray(run["primary"].read()["intensity_q"])
    assert intensity.shape == (FRAMES, BINS) and np.isnan(intensity[:, :3]).all()
    assert list(np.asarray(run["stitched"].read()["final"])) == [False, True]
    # the bulk write: whether the server offers it (once per writer), then the run; the
    # client-side path: nodes (the run, 2 streams, 5 arrays, 2 tables) each made by one
    # request and its data written by one more, then the stop and one close; the old
    # path closes every node alone
    nodes = 1 + 2 + 5 + 2
    assert (bulk_requests, second_bulk_requests) == (2, 1)
    assert 2 * nodes <= whole_requests <= 2 * nodes + 2 < old_requests


def test_the_bulk_write_endpoint_needs_the_api_key(served):
    server, catalog = served
    docs = derived_run(seed=5)
    url = f"{server.uri}{ROUTE}"
    assert httpx.get(url).status_code == 401
    assert httpx.post(f"{url}/processed", content=b"".join(encode(name, doc) for name, doc in docs)).status_code == 401
    assert docs[0][1]["uid"] not in catalog.processed


def _with_external_data(docs):
    """``docs`` with a resource document after the start (data outside the events)."""
    start = docs[0][1]
    resource = {"uid": "r" * 8, "run_start": start["uid"], "spec": "AD_HDF5", "root": "/", "resource_path": "x.h5",
                "resource_kwargs": {}, "path_semantics": "posix"}
    return [docs[0], ("resource", resource), *docs[1:]]


def _with_a_ragged_key(docs):
    """``docs`` with the first stream's pattern declared of no fixed length."""
    index = next(i for i, (name, _) in enumerate(docs) if name == "descriptor")
    descriptor = docs[index][1]
    data_keys = {**descriptor["data_keys"], "q": {**descriptor["data_keys"]["q"], "shape": [None]}}
    return [*docs[:index], ("descriptor", {**descriptor, "data_keys": data_keys}), *docs[index + 1:]]


@pytest.mark.parametrize("alter, refusal", [(_with_external_data, "not a resource document"),
                                            (_with_a_ragged_key, "no ragged arrays")])
def test_the_bulk_write_refuses_runs_it_cannot_write_as_tiledwriter_would_and_stores_nothing(served, alter,
                                                                                                refusal):
    server, catalog = served
    docs = alter(derived_run(seed=7))
    url = f"{server.uri}{ROUTE}/processed"
    # with the catalog's own (authenticated) HTTP client, as the processed writer posts
    response = catalog.client.context.http_client.post(url, content=b"".join(encode(n, d) for n, d in docs))
    assert response.status_code == 422 and refusal in response.json()["detail"]
    assert docs[0][1]["uid"] not in catalog.processed


def test_a_refused_bulk_write_leaves_the_spool_and_sync_back_fills_it(served, monkeypatch):
    _, catalog = served
    real = writer_module.bulk_write_url
    monkeypatch.setattr(writer_module, "bulk_write_url", lambda container: real(container) + "_missing")
    docs = derived_run(seed=6)
    uid = docs[0][1]["uid"]
    writer = processed_writer(catalog)
    try:
        _write(writer, docs, RequestCounter(catalog.client))
    finally:
        writer.close()
    assert uid not in catalog.processed
    assert (catalog.spool_dir / "processed" / f"{uid}.jsonl").exists()
    report = sync(catalog, catalog.spool_dir)
    assert f"processed/{uid}" in report.written
    assert holds_emitted(catalog.processed[uid], docs)
    assert not (catalog.spool_dir / "processed" / f"{uid}.jsonl").exists()


def test_a_stock_tiled_server_gets_the_run_node_by_node_with_the_same_content(stock_server, tmp_path,  # noqa: F811
                                                                                  monkeypatch):
    uri, key, client, _ = stock_server
    monkeypatch.setenv("TILED_API_KEY", key)
    catalog = open_catalog(uri, directory=tmp_path)
    catalog.client.create_container(REFERENCE_CONTAINER, specs=[_RUN_CATALOG_SPEC])
    requests = RequestCounter(catalog.client)
    new = processed_writer(catalog)
    old = SpoolingWriter(catalog.client[REFERENCE_CONTAINER], catalog.spool_dir / "old", batch_size=100_000)
    docs = derived_run(seed=7)
    try:
        new_requests = _write(new, docs, requests)
        _write(old, docs, requests)
    finally:
        new.close()
        old.close()
    uid = docs[0][1]["uid"]
    assert holds_emitted(catalog.processed[uid], docs)
    assert stored_equal(catalog.processed[uid], catalog.client[REFERENCE_CONTAINER][uid], docs)
    assert new_requests >= 2 * (1 + 2 + 5 + 2)  # asked for the endpoint, then node by node
    assert not list((catalog.spool_dir / "processed").glob("*.jsonl"))


def test_nothing_of_a_derived_run_is_in_the_catalog_before_its_stop(served):
    _, catalog = served
    docs = derived_run(seed=2)
    uid = docs[0][1]["uid"]
    writer = processed_writer(catalog)
    try:
        for name, doc in docs[:-1]:
            writer(name, doc)
        assert writer.flush()
        assert uid not in catalog.processed
        assert (catalog.spool_dir / "processed" / f"{uid}.jsonl").exists()
        writer(*docs[-1])
        assert holds_emitted(catalog.processed[uid], docs)
        assert not (catalog.spool_dir / "processed" / f"{uid}.jsonl").exists()
    finally:
        writer.close()


def test_a_derived_run_whose_catalog_died_is_back_filled_by_sync(tmp_path, monkeypatch):
    key = secrets.token_hex(16)
    monkeypatch.setenv("TILED_API_KEY", key)
    docs = derived_run(seed=3)
    uid = docs[0][1]["uid"]
    server = ServerProcess(tmp_path, key, startup_timeout_s=300)
    catalog = open_catalog(server.uri, directory=tmp_path)
    writer = processed_writer(catalog)
    try:
        for name, doc in docs[:-1]:
            writer(name, doc)
        server.kill()
        writer(*docs[-1])  # returns: the dead server is not waited for
    finally:
        writer.close()
    assert (tmp_path / "spool" / "processed" / f"{uid}.jsonl").exists()
    with ServerProcess(tmp_path, key, startup_timeout_s=300) as server:
        catalog = open_catalog(server.uri, directory=tmp_path)
        report = sync(catalog, catalog.spool_dir)
        assert f"processed/{uid}" in report.written
        assert holds_emitted(catalog.processed[uid], docs)
