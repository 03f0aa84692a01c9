"""Every file command against the corpus of bad inputs (:mod:`xrd_bluesky_bench.bad_inputs`):
each answer is a named error or, for inputs that may be right, a warning; never a
silent result or an unexpected error; the good command lines the corpus spoils run
clean. ``xrd-bluesky bench inputs`` prints the same table with its timings."""

import pytest

from xrd_bluesky.sources.pack import check_run, load_run, open_pack
from xrd_bluesky_bench.bad_inputs import (
    corpus,
    good_cases,
    good_files,
    good_pack,
    run_case,
    table,
)

#: Inputs that are unusual but may be right: answered with a warning (and a result).
WARNED = {"frame with 5 % marker pixels", "mask of a third of the pixels", "pattern with a one-point spike",
          "arm angle outside the calibrated range"}

@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("corpus")
    good = good_files(directory)
    return [run_case(case) for case in corpus(good, directory)], [run_case(c) for c in good_cases(good, directory)]


def _defect(o) -> bool:
    """Whether an outcome is a silent result, an unexpected error, or a named error
    whose message (the last line on stderr) is not the command's own one line."""
    return o.kind in ("silent", "unexpected") or (o.kind == "named error" and not o.message.startswith("xrd-bluesky"))


def test_no_bad_input_gives_a_silent_result_or_an_unexpected_error(answers):
    outcomes, _ = answers
    print("\n".join(table(outcomes)))
    wrong = {(o.case.command, o.case.label): f"{o.kind} (exit {o.status}) {o.message}" for o in outcomes if _defect(o)}
    assert not wrong, "\n".join(f"{command} / {label}: {why}" for (command, label), why in wrong.items())
    assert len(outcomes) >= 235


def test_only_inputs_that_may_be_right_are_merely_warned(answers):
    outcomes, _ = answers
    warned = {o.case.label for o in outcomes if o.kind == "warning"}
    assert warned == WARNED
    for o in outcomes:
        if o.kind == "named error":
            assert o.status in (1, 2), o


def test_the_good_inputs_run_clean(answers):
    _, good = answers
    for o in good:
        assert (o.status, o.kind) == (0, "silent"), (o.case.label, o.message)


def test_the_good_pack_passes_every_check_of_ingest(tmp_path):
    """The pack the ``ingest`` cases spoil, checked as ``ingest`` checks a run before
    writing it (a catalog write is ``test_ingest_pack``'s)."""
    pack = open_pack(good_pack(tmp_path))
    [path] = pack.document_files
    run = check_run(pack, load_run(pack, path))
    assert (run.events, run.frames, [f.path.is_file() for f in run.files]) == (2, 2, [True])
