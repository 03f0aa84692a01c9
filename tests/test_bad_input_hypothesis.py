"""Generated bad input: frames of any shape, dtype and values, geometries of any
numbers, and documents with keys deleted or replaced by any value either go through or
raise a domain error (:class:`~xrd_bluesky.errors.XRDBlueskyError`) — never a
``KeyError``, ``TypeError``, ``IndexError``... — and no example hangs (the
``deadline``: a guard against runaway allocations or loops, not a timing; examples take
milliseconds, timings belong to the benchmarks).

The integrations run on a 16 x 24 pixel detector so that an example costs
milliseconds; the compiled kernel is warmed up first so that the deadline measures the
checks, not the compilation.
"""

from __future__ import annotations

import copy
import json

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_bad_input import (
    DOCUMENT_ORDER,
    STAGE_KEYS,
    TINY_SHAPE,
    changed,
    documents,
    h5_frames,
    tiny_poni,
    warm_up_integration,
)

from xrd_bluesky.errors import XRDBlueskyError
from xrd_bluesky.frames import (
    FrameRegistry,
    detector_config,
    frames_per_event,
    stage_position,
)
from xrd_bluesky.schema.start import require
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction.corrected_integration import CorrectedIntegrator
from xrd_bluesky.science.reduction.integration import UNITS
from xrd_bluesky.science.reduction.single_frame import integrate_1d

#: No example hangs (10 s: one may wait for the CPU while another test process computes,
#: as happened once for 3 s); enough examples to find the corner cases, few enough for
#: the file to run in well under a minute on two cores.
DEADLINE_MS = 10_000
BOUNDED = settings(deadline=DEADLINE_MS, max_examples=400)

#: Every real dtype a detector or a file could deliver, and one that is not real.
DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
          np.float16, np.float32, np.float64, np.complex64]


@pytest.fixture(scope="module", autouse=True)
def warm():
    warm_up_integration()


def assert_domain_error_or(call, check=None):
    """Run ``call()``: a domain error is an answer; any other exception fails the test.
    ``check(result)`` then runs on a result."""
    try:
        result = call()
    except XRDBlueskyError as exc:
        event(type(exc).__name__)
        return
    event("went through")
    if check is not None:
        check(result)


def some_bin_is_a_number(result) -> None:
    """No silent all-NaN pattern: at least one bin holds a value."""
    assert not np.all(np.isnan(result.intensity)), "an all-NaN pattern came out without an error"


@st.composite
def frames(draw) -> np.ndarray:
    """Mostly the detector's shape, sometimes any shape of 0-3 dimensions; any dtype;
    any values of it (hypothesis fills an array with one value and sprinkles others:
    all-NaN, all-negative, a few infinities, huge numbers...)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.one_of(st.just(TINY_SHAPE), st.just(TINY_SHAPE), hnp.array_shapes(min_dims=0, max_dims=3,
                                                                                     max_side=30)))
    return draw(hnp.arrays(dtype, shape))


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` about three times in four, ``bad`` otherwise: most examples get as far as
    the integration, the rest try the checks."""
    return st.one_of(good, good, good, bad)


#: Numbers of bins, saturation levels and radial ranges (of the tiny detector's 0-9 1/nm).
npts = mostly(st.integers(1, 40), st.integers(-2, 0))
max_counts = mostly(st.none() | st.floats(1.0, 1e7), st.floats() | st.integers(-10, 10**6))
radial_ranges = mostly(st.none() | st.tuples(st.floats(0, 10), st.floats(0, 10)), st.tuples(st.floats(), st.floats()))


@BOUNDED
@given(frame=frames(), npt=npts, unit=st.sampled_from(sorted(UNITS)), max_count=max_counts,
       mask=st.one_of(st.none(), hnp.arrays(np.bool_, TINY_SHAPE)))
def test_generated_frames_into_integrate_1d(frame, npt, unit, max_count, mask):
    assert_domain_error_or(lambda: integrate_1d(frame, tiny_poni(), npt=npt, unit=unit, max_count=max_count,
                                                mask=mask), some_bin_is_a_number)


@BOUNDED
@given(frame=frames(), npt=npts, npt_azim=mostly(st.none() | st.integers(1, 8), st.integers(-1, 0)),
       radial_range=radial_ranges, max_count=max_counts, split=st.sampled_from(["bbox", "no"]))
def test_generated_frames_into_the_corrected_integrator(frame, npt, npt_azim, radial_range, max_count, split):
    def integrate():
        integrator = CorrectedIntegrator(tiny_poni(), npt=npt, npt_azim=npt_azim, radial_range=radial_range,
                                         max_count=max_count, split=split)
        return integrator.sums(frame).result()
    assert_domain_error_or(integrate, some_bin_is_a_number)


#: Plausible ranges of the geometry parameters (m, rad) and of the pixel sizes (m).
PLAUSIBLE = {"dist": (1e-3, 2.0), "poni1": (-0.05, 0.05), "poni2": (-0.05, 0.05), "rot1": (-3.2, 3.2),
             "rot2": (-3.2, 3.2), "rot3": (-3.2, 3.2), "wavelength": (5e-12, 5e-10), "pixel1": (1e-5, 5e-3),
             "pixel2": (1e-5, 5e-3)}


@st.composite
def geometry_parameters(draw) -> dict[str, float]:
    """Plausible values, up to three of them replaced by any float (NaN, inf, 1e308,
    -0.0...)."""
    params = {key: draw(st.floats(*bounds), label=key) for key, bounds in PLAUSIBLE.items()}
    for key in draw(st.sets(st.sampled_from(sorted(PLAUSIBLE)), max_size=3), label="wild"):
        params[key] = draw(st.floats(), label=f"wild {key}")
    return params


@BOUNDED
@given(params=geometry_parameters(),
       shape=mostly(st.tuples(st.integers(1, 24), st.integers(1, 24)),
                    st.tuples(st.integers(-1, 24), st.integers(-1, 0))))
def test_generated_geometries(params, shape):
    """A geometry is refused with a domain error, or it integrates a flat frame into a
    pattern with numbers in it (or refuses that with a domain error)."""
    config = json.dumps({"pixel1": params.pop("pixel1"), "pixel2": params.pop("pixel2"), "max_shape": list(shape)})

    def integrate():
        poni = Poni(**params, detector="Detector", detector_config=config)
        frame = np.ones([max(n, 0) for n in shape])
        some_bin_is_a_number(integrate_1d(frame, poni, npt=20))
        return CorrectedIntegrator(poni, npt=20).sums(frame).result()
    assert_domain_error_or(integrate, some_bin_is_a_number)


# --------------------------------------------------------------------------- documents

#: Anything a document may hold in place of the right value.
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
              hnp.arrays(np.float64, st.integers(0, 3))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


@st.composite
def mutated(draw, doc: dict) -> dict:
    """``doc`` with one to three keys, at any depth, deleted or given another value."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        while node:
            key = draw(st.sampled_from(sorted(node, key=str)))
            if isinstance(node[key], dict) and node[key] and draw(st.booleans()):
                node = node[key]
                continue
            if draw(st.booleans()):
                del node[key]
            else:
                node[key] = draw(json_values)
            break
    return doc


@pytest.fixture(scope="module")
def frame_docs(tmp_path_factory) -> dict[str, dict]:
    """Consistent documents of a two-event run (both events), frames in a real file."""
    docs = documents(h5_frames(tmp_path_factory.mktemp("frames") / "frames.h5"))
    docs["event 2"] = changed(changed(docs["event"], ("seq_num",), 2), ("uid",), "ev-2")
    return docs


RUN_START = {"uid": "start-1", "energy_keV": 12.0, "calibrant": "CeO2", "stage_motors": STAGE_KEYS}


@settings(deadline=DEADLINE_MS, max_examples=800)
@given(data=st.data())
def test_generated_documents_into_the_frame_collector(frame_docs, data):
    """Malformed documents, in the live or the replay order, through
    :class:`FrameRegistry`: each document and the final ``ready`` go through or raise a
    domain error."""
    names = data.draw(st.sets(st.sampled_from(sorted(frame_docs)), min_size=1), label="mutated")
    docs = {name: data.draw(mutated(doc), label=name) if name in names else doc for name, doc in frame_docs.items()}
    order = data.draw(st.sampled_from([(*DOCUMENT_ORDER, "event 2"),
                                       ("descriptor", "event", "event 2", "stream_resource", "stream_datum")]))
    collector = FrameRegistry()
    for name in order:
        method = getattr(collector, name.split()[0])
        assert_domain_error_or(lambda method=method, name=name: method(docs[name]))
    assert_domain_error_or(lambda: collector.ready("primary"))
    assert_domain_error_or(collector.unmatched_frames)


@settings(deadline=DEADLINE_MS, max_examples=800)
@given(data=st.data())
def test_generated_documents_into_the_document_helpers(frame_docs, data):
    descriptor = data.draw(mutated(frame_docs["descriptor"]), label="descriptor")
    event = data.draw(mutated(frame_docs["event"]), label="event")
    start = data.draw(mutated(RUN_START), label="start")
    assert_domain_error_or(lambda: frames_per_event(descriptor, "det_image"))
    assert_domain_error_or(lambda: detector_config(descriptor, "det_image"))
    assert_domain_error_or(lambda: stage_position(event, start.get("stage_motors")))
    assert_domain_error_or(lambda: require(start, ("calibrant", "energy_keV", "stage_motors"), "run"))
