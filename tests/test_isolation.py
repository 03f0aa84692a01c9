"""The one safe-callback wrapper (:mod:`xrd_bluesky.isolation`): with its debug switch off,
an optional consumer that fails never reaches the RunEngine (a real scan of ``ophyd.sim``
devices completes, the derived run ends ``fail`` naming the exception); with
``XRD_BLUESKY_DEBUG_CALLBACKS`` or bluesky's ``BLUESKY_DEBUG_CALLBACKS`` set, the
exception propagates, after the consumer's own reaction."""

from __future__ import annotations

import pytest
from bluesky.plans import scan
from event_model import compose_run
from matplotlib.figure import Figure
from ophyd.sim import SynAxis, SynGauss

from xrd_bluesky.callbacks import AnalysisRouter
from xrd_bluesky.callbacks.derived import DerivedRunCallback
from xrd_bluesky.callbacks.live_plot import LivePlot
from xrd_bluesky.isolation import DEBUG_VARIABLES, debug_callbacks, isolated
from xrd_bluesky.store.file_export import FileExporter

REASON = "the probe broke at the second point"


class ProbeFailure(RuntimeError):
    """What the failing analysis raises."""


class Probe(DerivedRunCallback):
    """An analysis that opens its derived run and fails at the raw run's second event."""

    analysis = "probe"

    def start(self, doc):
        self.open_derived(doc, {})

    def event(self, doc):
        if doc["seq_num"] == 2:
            raise ProbeFailure(REASON)


@pytest.fixture
def switch_off(monkeypatch):
    for name in DEBUG_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=DEBUG_VARIABLES)
def switch_on(request, monkeypatch, switch_off):
    monkeypatch.setenv(request.param, "1")
    return request.param


def _scan_with_probe(RE, raw: list, derived: list) -> None:
    """Run a 3-point scan of ``ophyd.sim`` devices with a :class:`Probe` subscribed,
    collecting the raw documents and the derived ones."""
    motor = SynAxis(name="motor")
    det = SynGauss("det", motor, "motor", center=0.0, Imax=1.0)
    RE.subscribe(lambda name, doc: raw.append((name, doc)))
    RE.subscribe(Probe(lambda name, doc: derived.append((name, doc))))
    RE(scan([det], motor, -1.0, 1.0, 3))


def _stops(documents: list) -> list[dict]:
    return [doc for name, doc in documents if name == "stop"]


def test_a_failing_analysis_never_reaches_the_run_engine(RE, switch_off, caplog):
    assert not debug_callbacks()
    raw, derived = [], []
    _scan_with_probe(RE, raw, derived)
    assert [doc["seq_num"] for name, doc in raw if name == "event"] == [1, 2, 3]
    assert [stop["exit_status"] for stop in _stops(raw)] == ["success"]
    [stop] = _stops(derived)
    assert stop["exit_status"] == "fail" and stop["reason"] == f"ProbeFailure: {REASON}"
    assert "probe failed on a 'event' document" in caplog.text and "ProbeFailure" in caplog.text


def test_the_debug_switch_lets_the_exception_through(RE, switch_on):
    """The analysis' own reaction runs first: its derived run still ends ``fail``."""
    assert debug_callbacks()
    raw, derived = [], []
    with pytest.raises(ProbeFailure, match=REASON):
        _scan_with_probe(RE, raw, derived)
    assert [doc["seq_num"] for name, doc in raw if name == "event"] == [1, 2]
    [stop] = _stops(derived)
    assert stop["exit_status"] == "fail" and stop["reason"] == f"ProbeFailure: {REASON}"


class BrokenPlot(LivePlot):
    def event(self, doc):
        raise ProbeFailure(REASON)


def _unknown_geometry(detector_name):
    raise ProbeFailure(REASON)


def _failing_documents(consumer_name, tmp_path):
    """A consumer and the documents that make it fail."""
    bundle = compose_run(metadata={"purpose": "measurement"})
    descriptor = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "test"}})
    event = descriptor.compose_event(data={"x": 1.0}, timestamps={"x": 0.0})
    raw = [("start", bundle.start_doc), ("descriptor", descriptor.descriptor_doc), ("event", event)]
    derived = compose_run(metadata={"purpose": "derived", "analysis": "integration", "parent_uids": ["p"]})
    derived_descriptor = derived.compose_descriptor(name="primary", data_keys={
        "q": {"dtype": "number", "shape": [], "source": "test", "units": "1/nm"}})
    derived_event = derived_descriptor.compose_event(data={"q": 1.0}, timestamps={"q": 0.0})
    exported = [("start", derived.start_doc), ("descriptor", derived_descriptor.descriptor_doc),
                ("event", derived_event)]
    if consumer_name == "router":
        return AnalysisRouter(lambda name, doc: None, _unknown_geometry), raw
    if consumer_name == "plot":
        return BrokenPlot(Figure()), raw
    return FileExporter(tmp_path), exported


@pytest.mark.parametrize(("consumer_name", "logged"), [
    ("router", "setting up its analysis failed; the run is not analysed"),
    ("plot", "BrokenPlot failed on a 'event' document"),
    ("file_export", "could not be written"),
])
def test_every_optional_consumer_is_isolated(consumer_name, logged, tmp_path, switch_off, caplog):
    """The router's factory, a live plot and the file exporter: each logs its own
    message with the traceback and returns."""
    consumer, documents = _failing_documents(consumer_name, tmp_path)
    for name, doc in documents:
        consumer(name, doc)
    assert logged in caplog.text and "Traceback" in caplog.text
    if consumer_name == "file_export":
        assert len(consumer.failures) == 1 and "KeyError" in consumer.failures[0]


@pytest.mark.parametrize(("consumer_name", "error"),
                         [("router", ProbeFailure), ("plot", ProbeFailure), ("file_export", KeyError)])
def test_every_optional_consumer_lets_through_when_debugging(consumer_name, error, tmp_path, switch_on):
    consumer, documents = _failing_documents(consumer_name, tmp_path)
    with pytest.raises(error):
        for name, doc in documents:
            consumer(name, doc)


def test_the_reaction_gets_the_arguments_and_the_exception(switch_off):
    seen = []

    def reaction(name, doc, *, exc):
        seen.append((name, doc, exc))
        return "handled"

    @isolated(reaction)
    def callback(name, doc):
        raise ProbeFailure(REASON)

    assert callback("event", {"uid": "e"}) == "handled"
    [(name, doc, exc)] = seen
    assert (name, doc) == ("event", {"uid": "e"}) and isinstance(exc, ProbeFailure)
    assert callback.__name__ == "callback"
