"""An evaluation's results file: appended per answer, resumed, refused when settings differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmoa_p2p.eval import (
    ALL_SETS,
    EvalError,
    Item,
    Outcome,
    QueueSample,
    ResultsFile,
    build_check,
    mcnemar_p,
    parse_configurations,
    summarise,
    wilson_interval,
)

SETTINGS = {"seed": 1, "max_tokens": 64}


def outcome(configuration: str, item: str, correct: bool, set_name: str = "s") -> Outcome:
    answer = "a" if correct else "b"  # what `item(...)`'s check scores right and wrong
    return Outcome(configuration, set_name, item, 0, f"q {item}", answer, correct, 1.5, 2, 30)


def item(name: str, set_name: str) -> Item:
    spec = {"kind": "exact", "answers": ["a"]}
    return Item(name, set_name, f"q {name}", spec, build_check(spec))


def test_a_results_file_is_resumed_and_refused_with_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    first = ResultsFile(path, SETTINGS)
    first.add(outcome("one", "1", True))
    first.add_queue(QueueSample("one", 0.5, 1.0))
    again = ResultsFile(path, SETTINGS)
    assert again.done(("one", "s", "1", 0)) and not again.done(("one", "s", "2", 0))
    assert again.outcomes == first.outcomes and again.queue == first.queue
    with pytest.raises(EvalError, match=r"other settings \(max_tokens\)"):
        ResultsFile(path, {**SETTINGS, "max_tokens": 128})
    (tmp_path / "other.txt").write_text("hello\n")
    with pytest.raises(EvalError, match="not a dmoa-p2p eval results file"):
        ResultsFile(tmp_path / "other.txt", SETTINGS)


def test_a_line_cut_off_at_the_end_is_dropped_one_in_the_middle_is_an_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.jsonl"
    ResultsFile(path, SETTINGS).add(outcome("one", "1", True))
    with path.open("a") as out:
        out.write('{"outcome": {"configuration": "one", "se')  # killed mid-write
    resumed = ResultsFile(path, SETTINGS)
    assert len(resumed.outcomes) == 1
    resumed.add(outcome("one", "2", False))
    assert len(ResultsFile(path, SETTINGS).outcomes) == 2
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{broken", *lines[1:]]) + "\n")
    with pytest.raises(EvalError, match="line 2 is damaged"):
        ResultsFile(path, SETTINGS)


def test_each_configuration_is_compared_with_the_baseline_on_the_same_items(
    tmp_path: Path,
) -> None:
    results = ResultsFile(tmp_path / "r.jsonl", SETTINGS)
    for i in range(20):
        results.add(outcome("one", str(i), i < 5, set_name="a" if i % 2 else "b"))
        results.add(outcome("self-k2-vote", str(i), i < 15, set_name="a" if i % 2 else "b"))
    results.add_queue(QueueSample("self-k2-vote", 1.0, 2.0))
    results.add_queue(QueueSample("self-k2-vote", 2.0, 4.0))
    items = [item(str(i), "a" if i % 2 else "b") for i in range(20)]
    rows = summarise(results, parse_configurations("self-k2-vote"), items)
    assert [(r.configuration, r.set) for r in rows] == [
        ("one", "a"), ("one", "b"), ("one", ALL_SETS),
        ("self-k2-vote", "a"), ("self-k2-vote", "b"), ("self-k2-vote", ALL_SETS),
    ]
    overall = rows[-1]
    assert (overall.answers, overall.correct, overall.accuracy) == (20, 15, 0.75)
    assert overall.low < 0.75 < overall.high
    comparison = overall.against_baseline
    assert comparison is not None
    assert (comparison.only_this, comparison.only_baseline) == (10, 0)
    assert comparison.difference == pytest.approx(0.5) and comparison.p_value < 0.01
    assert overall.mean_queue == 3.0 and rows[2].mean_queue is None
    assert (overall.latency_p50_s, overall.inferences_per_answer) == (1.5, 2.0)


def test_only_the_items_asked_for_are_summarised(tmp_path: Path) -> None:
    """A file resumed with more items holds answers to others: a summary of the first ten
    is of those ten, for the baseline and the configuration alike."""
    results = ResultsFile(tmp_path / "r.jsonl", SETTINGS)
    for i in range(20):
        results.add(outcome("one", str(i), i >= 10))
        results.add(outcome("self-k2-vote", str(i), True))
    first_ten = [item(str(i), "s") for i in range(10)]
    rows = summarise(results, parse_configurations("self-k2-vote"), first_ten)
    assert [(r.answers, r.correct) for r in rows] == [(10, 0), (10, 10)]
    comparison = rows[1].against_baseline
    assert comparison is not None and (comparison.items, comparison.only_this) == (10, 10)


def test_stored_answers_are_scored_again_by_the_checks_as_they_are_now(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "r.jsonl", SETTINGS)
    results.add(Outcome("one", "s", "0", 0, "q 0", "a", False, 1.0, 1, 1))  # scored before
    results.add(Outcome("one", "s", "1", 0, "q 1", "a", True, 1.0, 1, 1, error="timed out"))
    [row] = summarise(results, parse_configurations("one"), [item("0", "s"), item("1", "s")])
    assert (row.answers, row.correct, row.failed) == (2, 1, 1)


def test_an_answer_that_failed_is_asked_again_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    first = ResultsFile(path, SETTINGS)
    first.add(Outcome("one", "s", "0", 0, "q 0", "", False, 1.0, 0, 0, error="refused"))
    assert not first.done(("one", "s", "0", 0))
    first.add(outcome("one", "0", True))
    again = ResultsFile(path, SETTINGS)
    assert again.done(("one", "s", "0", 0)) and again.outcomes[("one", "s", "0", 0)].answer == "a"


def test_repeats_of_an_item_count_once_in_its_interval_and_its_comparison(
    tmp_path: Path,
) -> None:
    results = ResultsFile(tmp_path / "r.jsonl", SETTINGS)
    for i in range(20):
        for repeat in range(3):  # the same answer three times: no more evidence than once
            right = "a" if i < 10 else "b"
            results.add(Outcome("one", "s", str(i), repeat, "q", "b", False, 1.0, 1, 1))
            results.add(Outcome("self-k2-vote", "s", str(i), repeat, "q", right, True, 1.0, 1, 1))
    items = [item(str(i), "s") for i in range(20)]
    _, row = summarise(results, parse_configurations("self-k2-vote"), items)
    assert (row.answers, row.correct) == (60, 30)
    assert (row.low, row.high) == wilson_interval(10, 20)
    comparison = row.against_baseline
    assert comparison is not None
    assert (comparison.items, comparison.only_this) == (20, 10)
    assert comparison.p_value == mcnemar_p(10, 0)
