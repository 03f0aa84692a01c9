"""The compatibility hooks of :mod:`xrd_bluesky.compat`, each exercised against the
installed library (the library's own public results as the oracle), and the release
check every compatibility module makes when it is imported."""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import threading
import time
import tomllib
import types
import uuid
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyFAI.calibrant
import pyFAI.detectors
import pytest
import scipy.sparse
import zmq
from bluesky.plans import scan
from bluesky_tiled_plugins import TiledWriter
from ophyd.sim import det, motor
from pyFAI.goniometer import GeometryTransformation, Goniometer, SingleGeometry
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
from tiled.mimetypes import TILED_SQL_TABLE_MIMETYPE
from tiled.storage import parse_storage, register_storage
from tiled.structures.core import StructureFamily
from tiled.structures.data_source import DataSource, Management
from tiled.structures.table import TableStructure

from xrd_bluesky.compat import bluesky as bluesky_compat
from xrd_bluesky.compat import bluesky_tiled_plugins as plugins_compat
from xrd_bluesky.compat import pyfai as pyfai_compat
from xrd_bluesky.compat import tiled as tiled_compat
from xrd_bluesky.compat.releases import ReleaseRange, UnsupportedReleaseError
from xrd_bluesky_bench.testing import PostgresNotInstalledError, TemporaryPostgres

COMPAT_MODULES = (tiled_compat, bluesky_compat, pyfai_compat, plugins_compat)
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


# -- the release checks -------------------------------------------------------------------
def _declared_dependency(distribution: str) -> str:
    """The requirement of ``distribution`` in pyproject.toml's [project] dependencies."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    found = [d for d in dependencies if d.split("[")[0].split(">")[0].split("<")[0].lower() == distribution.lower()]
    assert len(found) == 1, (distribution, dependencies)
    return found[0]


@pytest.mark.parametrize("module", COMPAT_MODULES, ids=lambda m: m.__name__)
def test_each_hooked_library_is_bounded_in_pyproject_as_its_module_checks_it(module):
    releases = module.RELEASES
    assert releases.module == module.__name__
    assert _declared_dependency(releases.distribution).endswith(releases.specifier)
    assert releases.check() == importlib.metadata.version(releases.distribution)


@pytest.mark.parametrize("module", COMPAT_MODULES, ids=lambda m: m.__name__)
def test_importing_a_compat_module_with_a_release_outside_its_range_fails_naming_everything(module, monkeypatch):
    releases = module.RELEASES
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: releases.below + ".0" if name == releases.distribution else real_version(name))
    with pytest.raises(UnsupportedReleaseError) as raised:
        importlib.reload(module)  # the check comes before every definition: a failed reload keeps them
    message = str(raised.value)
    assert releases.distribution in message and f"{releases.below}.0 is installed" in message
    assert module.__name__ in message and releases.internals in message and releases.specifier in message


@pytest.mark.parametrize(("release", "inside"), [
    ("0.2", True), ("0.2.0b3", True), ("0.2.20", True), ("0.2.999", True),
    ("0.1.9", False), ("0.3", False), ("0.3.0a1", False), ("1.0.0", False), ("", False), ("dev", False)])
def test_a_release_range_holds_its_minimum_and_stops_before_its_bound(release, inside):
    assert ReleaseRange("tiled", "0.2", "0.3", "m", "x").contains(release) is inside


def test_a_library_without_metadata_is_outside_every_range():
    releases = ReleaseRange("no-such-distribution-xrd", "1.0", "2.0", "xrd_bluesky.compat.none", "nothing")
    with pytest.raises(UnsupportedReleaseError, match="no-such-distribution-xrd \\(no package metadata\\)"):
        releases.check()


# -- tiled ---------------------------------------------------------------------------------
class _CountingPool:
    """A connection pool handing out ``pool``'s connections, counting them."""

    def __init__(self, pool):
        self.pool = pool
        self.connections = 0

    def connect(self):
        self.connections += 1
        return self.pool.connect()

    def dispose(self) -> None:
        self.pool.dispose()


def test_a_replaced_connection_pool_serves_the_storages_connections(tmp_path):
    storage = parse_storage(f"duckdb:///{tmp_path / 'tables.duckdb'}")
    original = tiled_compat.connection_pool(storage)
    assert hasattr(original, "connect") and tiled_compat.connection_pool(storage) is original
    counting = _CountingPool(original)
    tiled_compat.replace_connection_pool(storage, counting)
    try:
        assert tiled_compat.connection_pool(storage) is counting
        with closing(storage.connect()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 42")
            assert cursor.fetchall() == [(42,)]
        assert counting.connections == 1
    finally:
        storage.dispose()


@pytest.fixture(scope="module")
def postgres():
    try:
        with TemporaryPostgres() as cluster:
            yield cluster
    except PostgresNotInstalledError as exc:  # .ci/run installs it; a user's machine may not have it
        pytest.skip(str(exc))


def test_the_event_ordered_adapter_reads_a_postgresql_table_in_seq_num_order_through_its_index(postgres):
    storage = parse_storage(postgres.uri)
    register_storage(storage)
    frame = pd.DataFrame({"seq_num": np.arange(1, 6), "value": np.arange(5) * 1.5})
    source = DataSource(structure_family=StructureFamily.table, structure=TableStructure.from_pandas(frame),
                        mimetype=TILED_SQL_TABLE_MIMETYPE, management=Management.writable)
    adapter_class = tiled_compat.event_ordered_sql_adapter()
    assert tiled_compat.event_ordered_sql_adapter() is adapter_class
    source = adapter_class.init_storage(storage, source)
    node = types.SimpleNamespace(metadata_={}, specs=[])
    adapter = adapter_class.from_catalog(source, node)
    try:
        for row in reversed(range(len(frame))):  # appended last event first
            adapter.append_partition(0, frame.iloc[[row]])
        assert adapter.order_by_args == [{"column": "seq_num", "direction": "asc"}]
        pd.testing.assert_frame_equal(adapter.read(), frame)
        tiled_order = adapter_class.__mro__[1].from_catalog(source, node).read()
        assert list(tiled_order["seq_num"]) == [5, 4, 3, 2, 1]  # what Tiled alone reads
        with closing(storage.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f"SELECT indexname FROM pg_indexes WHERE tablename = '{adapter.table_name}'")
            assert (f"{adapter.table_name}_events",) in cursor.fetchall()
    finally:
        storage.dispose()


@pytest.fixture
def catalog_tree(tmp_path):
    """A catalog's root adapter (SQLite, arrays in a directory, tables in DuckDB) as
    a server builds it, started on an event loop running in a thread of its own."""
    import asyncio

    from tiled.catalog import from_uri
    from tiled.config import StreamingCacheConfig

    from xrd_bluesky.store.server import storage_of

    catalog_uri, writable = storage_of(tmp_path)
    Path(writable[0]).mkdir(parents=True)
    tree = from_uri(catalog_uri, writable_storage=writable, init_if_not_exists=True,
                    cache_config=StreamingCacheConfig(uri="memory").model_dump())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(tree.startup(), loop).result()
    yield tree, loop
    asyncio.run_coroutine_threadsafe(tree.shutdown(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()


def _read(tree, loop, path: str):
    """The data of the node at ``path`` of ``tree``, read through Tiled's adapters."""
    import asyncio

    adapter = asyncio.run_coroutine_threadsafe(tree.lookup_adapter(path.split("/")), loop).result()
    return adapter, asyncio.run_coroutine_threadsafe(adapter.read(), loop).result()


def test_a_catalog_write_node_stores_what_it_is_given_as_tiled_reads_it(catalog_tree):
    import pyarrow as pa
    from tiled.structures.core import Spec

    tree, loop = catalog_tree
    root = tiled_compat.CatalogWriteNode.at(tree, loop, "")
    run = root.create_container("run1", metadata={"start": {"uid": "run1", "n": np.int64(3)}},
                                specs=[Spec("BlueskyRun", version="3.0")])
    stream = run.create_container("primary", metadata={"data_keys": {}},
                                  specs=[Spec("BlueskyEventStream", version="3.0"), Spec("composite")]).base
    pattern = np.arange(12.0).reshape(3, 4)
    pattern[0, 0] = np.nan
    array = stream.write_array(pattern, key="intensity", metadata={"units": "1/sr"}, dims=("time", "dim_int_1"))
    table = stream.create_appendable_table(pa.schema([("seq_num", pa.int64()), ("I0", pa.float64())]), key="internal")
    table.append_partition(0, pa.table({"seq_num": [1, 2, 3], "I0": [1.5, 2.5, 3.5]}))
    table.append_partition(0, pa.table({"seq_num": [4], "I0": [4.5]}))
    run.update_metadata(metadata={"stop": {"exit_status": "success"}}, drop_revision=True)
    run.close_stream()
    with pytest.raises(KeyError):  # nothing is in the catalog before the commit
        _read(tree, loop, "run1")
    root.commit()

    assert (array.shape, array.dtype, stream.item["id"]) == ((3, 4), np.dtype("float64"), "primary")
    adapter, stored = _read(tree, loop, "run1/primary/intensity")
    np.testing.assert_array_equal(stored, pattern)  # NaN where NaN was written
    assert adapter.structure().dims == ("time", "dim_int_1") and adapter.metadata() == {"units": "1/sr"}
    _, rows = _read(tree, loop, "run1/primary/internal")
    assert list(rows["seq_num"]) == [1, 2, 3, 4] and list(rows["I0"]) == [1.5, 2.5, 3.5, 4.5]
    stored_run, _ = _read(tree, loop, "run1")
    # numpy values stored as a client sends them (JSON), the update merged in
    assert stored_run.metadata() == {"start": {"uid": "run1", "n": 3}, "stop": {"exit_status": "success"}}
    assert [spec.name for spec in stored_run.specs] == ["BlueskyRun"]
    with pytest.raises(KeyError, match="no node at 'absent'"):
        tiled_compat.CatalogWriteNode.at(tree, loop, "absent")


def test_a_run_whose_key_is_taken_is_refused_whole_and_the_stored_one_stays(catalog_tree):
    import asyncio

    from tiled.catalog.adapter import Collision

    tree, loop = catalog_tree

    def stage(values) -> tiled_compat.CatalogWriteNode:
        root = tiled_compat.CatalogWriteNode.at(tree, loop, "")
        stream = root.create_container("run1").create_container("primary")
        stream.write_array(values, key="intensity")
        return root

    first, second = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    stage(first).commit()
    with pytest.raises(Collision, match="/run1"):
        stage(second).commit()
    _, stored = _read(tree, loop, "run1/primary/intensity")
    np.testing.assert_array_equal(stored, first)
    assert asyncio.run_coroutine_threadsafe(tree.keys_range(0, 10), loop).result() == ["run1"]


def test_a_commit_the_database_fails_leaves_nothing_behind_and_can_be_retried(catalog_tree, monkeypatch):
    import asyncio

    import pyarrow as pa

    tree, loop = catalog_tree

    def stage() -> tiled_compat.CatalogWriteNode:
        root = tiled_compat.CatalogWriteNode.at(tree, loop, "")
        stream = root.create_container("run1").create_container("primary")
        stream.write_array(np.arange(6.0).reshape(2, 3), key="intensity")
        stream.create_appendable_table(pa.schema([("seq_num", pa.int64())]), key="internal") \
            .append_partition(0, pa.table({"seq_num": [1, 2]}))
        return root

    async def database_down(*args):  # a fault we cannot cause for real mid-commit
        raise ConnectionError("the catalog database went away")

    with monkeypatch.context() as patch:
        patch.setattr(tiled_compat._Stage, "_enter", database_down)
        with pytest.raises(ConnectionError):
            stage().commit()
    assert asyncio.run_coroutine_threadsafe(tree.keys_range(0, 10), loop).result() == []
    stage().commit()  # the array storage the failed commit wrote was removed: nothing is in the way
    _, stored = _read(tree, loop, "run1/primary/intensity")
    np.testing.assert_array_equal(stored, np.arange(6.0).reshape(2, 3))
    _, rows = _read(tree, loop, "run1/primary/internal")
    assert list(rows["seq_num"]) == [1, 2]


def test_a_catalog_write_node_applies_tileds_spec_validators(catalog_tree):
    from tiled.structures.core import Spec
    from tiled.validation_registration import ValidationError

    tree, loop = catalog_tree
    root = tiled_compat.CatalogWriteNode.at(tree, loop, "")
    stream = root.create_container("composite", specs=[Spec("composite")])
    stream.create_container("nested")  # Tiled checks a composite container's contents when it is updated
    with pytest.raises(ValidationError, match="Nested containers are not allowed"):
        stream.update_metadata(metadata={"touched": True})
    root.commit()
    stored, _ = _read(tree, loop, "composite")
    assert "touched" not in stored.metadata()


# -- bluesky-tiled-plugins -----------------------------------------------------------------
def _closed_streams(client, write) -> list[str]:
    """The paths of the streams closed while ``write()`` writes through ``client``."""
    closed: list[str] = []

    def record(request: httpx.Request) -> None:
        if "/stream/close/" in request.url.path:
            closed.append(request.url.path)

    hooks = client.context.http_client.event_hooks["request"]
    hooks.append(record)
    try:
        write()
    finally:
        hooks.remove(record)
    return closed


_EVENT = {"uid": "e1", "descriptor": "d1", "seq_num": 1, "time": 1.0, "filled": {},
          "data": {"intensity": np.arange(4.0), "note": "ok"}, "timestamps": {"intensity": 1.0, "note": 1.0}}


@pytest.mark.parametrize("event", [
    _EVENT,
    {key: value for key, value in _EVENT.items() if key != "seq_num"},
    {**_EVENT, "seq_num": "1"},
    {**_EVENT, "unexpected": 1},
    {**_EVENT, "data": ["intensity", "note"]},
    {**_EVENT, "timestamps": None},
    {**_EVENT, "filled": {"intensity": 3}},
], ids=["valid", "no seq_num", "string seq_num", "extra key", "data a list", "no timestamps", "bad filled"])
def test_the_whole_run_normalizer_accepts_and_refuses_events_as_event_models_schema_does(event):
    from event_model import DocumentNames, schema_validators
    from jsonschema.exceptions import ValidationError

    def verdict(check) -> bool:
        try:
            check()
        except ValidationError:
            return False
        return True

    normalizer = plugins_compat._RunNormalizer()
    normalizer.dispatcher.process = lambda name, doc: None
    plain = {**event, "data": {key: np.asarray(value).tolist() for key, value in event["data"].items()}} \
        if isinstance(event["data"], dict) else event
    assert verdict(lambda: normalizer.emit(DocumentNames.event, event)) == \
        verdict(lambda: schema_validators[DocumentNames.event].validate(plain))


def test_the_whole_run_writer_writes_what_tiledwriter_writes_closing_the_run_only(catalog, RE):
    name = f"compat-{uuid.uuid4().hex[:8]}"
    stock, whole = (catalog.client.create_container(f"{name}-{kind}") for kind in ("stock", "whole"))
    writers = {"stock": TiledWriter(stock, batch_size=2**62, max_array_size=0),
               "whole": plugins_compat.WholeRunTiledWriter(whole, batch_size=2**62, max_array_size=0)}
    documents: list[tuple[str, dict]] = []
    RE(scan([det], motor, -1, 1, 5), lambda n, d: documents.append((n, d)))
    closed = {kind: _closed_streams(container, lambda kind=kind: [writers[kind](n, d) for n, d in documents])
              for kind, container in (("stock", stock), ("whole", whole))}
    uid = documents[0][1]["uid"]
    assert closed["whole"] == [f"/api/v1/stream/close/{name}-whole/{uid}"]
    assert len(closed["stock"]) > 1
    pd.testing.assert_frame_equal(whole[uid]["primary"].read().to_dataframe(),
                                  stock[uid]["primary"].read().to_dataframe())
    assert whole[uid].metadata["stop"]["exit_status"] == "success"


# -- bluesky --------------------------------------------------------------------------------
class _Recorder(bluesky_compat.MessageDispatcher):
    """Records the messages it receives; stops at ``b"stop"``."""

    def __init__(self, address: str):
        super().__init__(address, deserializer=self._never)
        self.listened = threading.Event()
        self.messages: list[bytes] = []

    @staticmethod
    def _never(payload: bytes) -> dict:
        raise AssertionError("the deserializer was called")

    def listening(self) -> None:
        self.listened.set()

    def receive(self, message: bytes) -> None:
        self.messages.append(message)
        if message == b"stop":
            self.stop_soon()


def test_a_message_dispatcher_hands_every_message_to_receive_as_received_until_stopped():
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    recorder = _Recorder(f"tcp://127.0.0.1:{port}")
    done = threading.Event()

    def publish() -> None:  # repeatedly: messages before the subscription arrives are dropped (slow joiner)
        recorder.listened.wait(30)
        deadline = time.monotonic() + 30
        while not done.wait(0.05) and time.monotonic() < deadline:
            pub.send(b"not a document at all")
            if recorder.messages:
                pub.send(b"stop")
        recorder.stop_soon()

    sender = threading.Thread(target=publish)
    sender.start()
    try:
        recorder.start()
    finally:
        done.set()
        sender.join()
        pub.close()
        context.destroy()
    assert recorder.listened.is_set()
    assert recorder.messages[-1] == b"stop" and set(recorder.messages[:-1]) == {b"not a document at all"}


# -- pyFAI -----------------------------------------------------------------------------------
DETECTOR = pyFAI.detectors.Detector(pixel1=172e-6, pixel2=172e-6, max_shape=(120, 100))


def _integrator() -> AzimuthalIntegrator:
    return AzimuthalIntegrator(dist=0.05, poni1=0.01, poni2=0.009, rot1=0.02, detector=DETECTOR, wavelength=1e-10)


@pytest.mark.parametrize("split", ["bbox", "no"])
def test_the_csr_matrix_is_the_one_pyfai_integrates_with(split):
    ai = _integrator()
    image = np.random.default_rng(1).uniform(10, 100, DETECTOR.max_shape).astype(np.float32)
    result = ai.integrate1d_ng(image, 40, unit="2th_deg", method=(split, "csr", "cython"), correctSolidAngle=False)
    data, indices, indptr = pyfai_compat.csr_matrix_parts(ai, result.method)
    matrix = scipy.sparse.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, image.size))
    signal = matrix @ image.ravel().astype(np.float64)
    pixels = matrix @ np.ones(image.size)
    np.testing.assert_allclose(signal, result.sum_signal, rtol=1e-6)
    np.testing.assert_allclose(signal / np.where(pixels > 0, pixels, 1), result.intensity, rtol=1e-5)


def _single_geometry() -> SingleGeometry:
    calibrant = pyFAI.calibrant.get_calibrant("LaB6")
    calibrant.wavelength = 1e-10
    image = np.zeros(DETECTOR.max_shape, np.float32)
    return SingleGeometry("compat", image, calibrant=calibrant, detector=DETECTOR, geometry=_integrator())


def test_a_refinement_without_garbage_collection_never_collects(monkeypatch):
    single = _single_geometry()
    collections: list[int] = []
    real_collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(1) or real_collect(*args))
    single.geometry_refinement.reset()
    assert collections  # pyFAI's default
    collections.clear()
    pyfai_compat.disable_garbage_collection(single)
    single.geometry_refinement.reset()
    single.geometry_refinement.set_dist(0.06)
    assert not collections


def test_the_refinement_fits_the_control_points_set_and_their_residuals_are_pyfais():
    single = _single_geometry()
    points = np.array([[10.2, 20.7, 0], [60.0, 50.0, 1], [100.5, 3.0, 2]])
    pyfai_compat.set_control_points(single, points)
    assert pyfai_compat.control_points(single) is points
    ai = _integrator()
    poni = [ai.dist, ai.poni1, ai.poni2, ai.rot1, ai.rot2, ai.rot3]
    residuals = pyfai_compat.two_theta_residuals(single, poni, ai.wavelength, points)
    rings = np.asarray(single.calibrant.get_2th())[points[:, 2].astype(int)]
    np.testing.assert_allclose(residuals, ai.tth(points[:, 0], points[:, 1]) - rings, rtol=1e-12)
    assert single.geometry_refinement.chi2() == pytest.approx(float(np.dot(residuals, residuals)), rel=1e-12)


def test_a_goniometer_files_content_and_detector_are_read_as_pyfai_writes_them():
    transformation = GeometryTransformation(param_names=["dist", "poni1", "poni2"], pos_names=["x"],
                                            dist_expr="dist", poni1_expr="poni1", poni2_expr="poni2 + x",
                                            rot1_expr="0", rot2_expr="0", rot3_expr="0")
    content = Goniometer([0.1, 0.01, 0.02], transformation, detector=DETECTOR, wavelength=1e-10).to_dict()
    versions = pyfai_compat.goniometer_file_versions()
    assert content["content"] == versions[0] and len(set(versions)) == 2
    detector = pyfai_compat.goniometer_detector(content)
    assert (detector.pixel1, detector.pixel2, tuple(detector.max_shape)) == (172e-6, 172e-6, DETECTOR.max_shape)
