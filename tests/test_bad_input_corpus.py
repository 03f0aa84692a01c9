"""Every file command against the corpus of bad inputs (:mod:`xrd_bluesky.bad_inputs`):
each answer is a named error or, for inputs that may be right, a warning; never a
silent result or an unexpected error; the good command lines the corpus spoils run
clean. ``xrd-bluesky bench inputs`` prints the same table with its timings."""

import pytest

from xrd_bluesky.bad_inputs import corpus, good_cases, good_files, run_case, table

#: Inputs that are unusual but may be right: answered with a warning (and a result).
WARNED = {"frame with 5 % marker pixels", "mask of a third of the pixels", "pattern with a one-point spike",
          "arm angle outside the calibrated range"}


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("corpus")
    good = good_files(directory)
    return [run_case(case) for case in corpus(good, directory)], [run_case(c) for c in good_cases(good, directory)]


def test_no_bad_input_gives_a_silent_result_or_an_unexpected_error(answers):
    outcomes, _ = answers
    print("\n".join(table(outcomes)))
    wrong = [f"{o.case.command} / {o.case.label}: {o.kind} (exit {o.status}) {o.message}" for o in outcomes
             if o.kind in ("silent", "unexpected")]
    assert not wrong, "\n".join(wrong)
    assert len(outcomes) >= 150


def test_only_inputs_that_may_be_right_are_merely_warned(answers):
    outcomes, _ = answers
    warned = {o.case.label for o in outcomes if o.kind == "warning"}
    assert warned == WARNED
    for o in outcomes:
        if o.kind == "named error":
            assert o.status in (1, 2) and o.message.startswith("xrd-bluesky"), o


def test_the_good_inputs_run_clean(answers):
    _, good = answers
    for o in good:
        assert (o.status, o.kind) == (0, "silent"), (o.case.label, o.message)
