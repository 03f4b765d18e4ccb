"""Question sets: the project's own, generated or shipped, and users' JSONL files."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from dmoa_p2p.eval import (
    BASELINE,
    LEVELS,
    EvalError,
    arithmetic_items,
    built_in_set,
    default_grid,
    load_set,
    parse_configuration,
    parse_configurations,
)


def test_arithmetic_is_the_same_for_a_seed_and_scored_by_its_answer() -> None:
    first, again, other = arithmetic_items(3, 40), arithmetic_items(3, 40), arithmetic_items(4, 40)
    assert [i.prompt for i in first] == [i.prompt for i in again]
    assert [i.prompt for i in first] != [i.prompt for i in other]
    assert collections.Counter(i.level for i in first) == {level: 10 for level in LEVELS}
    for item in first:
        answer = item.check["answer"]
        assert item.score(f"The answer is {answer}.")
        assert not item.score(str(answer + 1))
        assert item.prompt.endswith("Answer with the number only.")


def test_the_knowledge_set_is_large_enough_and_each_item_accepts_its_own_answer() -> None:
    items = built_in_set("knowledge")
    assert len(items) >= 150
    letters: collections.Counter[str] = collections.Counter()
    for item in items:
        check = item.check
        assert not item.score("I do not know."), item.id
        if check["kind"] == "choice":
            letter = check["answer"]
            letters[letter] += 1
            option = check["options"][ord(letter) - ord("A")]
            assert item.score(letter) and item.score(f"{letter}. {option}"), item.id
            assert item.score(option) and item.score(f"The answer is {letter}."), item.id
            wrong = "A" if letter != "A" else "B"
            assert not item.score(wrong), item.id
            assert not any(item.score(o) for o in check["options"] if o != option), item.id
            assert f"\n{letter}. " in item.prompt
        else:
            assert check["kind"] == "exact"
            assert all(item.score(answer) for answer in check["answers"]), item.id
    # a model that always answers one letter scores about a quarter of the choice items
    assert max(letters.values()) - min(letters.values()) <= 1


def test_the_instruction_set_has_every_kind_of_check_and_at_least_100_items() -> None:
    items = built_in_set("instructions")
    assert len(items) >= 100
    assert len({item.level for item in items}) >= 10
    assert len({item.id for item in items}) == len(items)
    # nothing complies with everything: an empty answer fails every item
    assert not any(item.score("") for item in items)


def test_a_users_set_is_read_with_its_errors_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    good = {"id": "q1", "prompt": "2+2?", "check": {"kind": "number", "answer": 4}}
    path.write_text("# my set\n\n" + json.dumps(good) + "\n")
    (item,) = load_set(str(path))
    assert (item.set, item.id, item.score("4")) == ("mine", "q1", True)

    def error(*lines: object) -> str:
        path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines))
        with pytest.raises(EvalError) as caught:
            load_set(str(path))
        return str(caught.value)

    assert "line 1: not JSON" in error("{oops")
    assert "line 2: id 'q1' is used twice" in error(good, good)
    assert "unknown field(s) answer" in error({**good, "answer": 4})
    assert '"prompt" must be' in error({**good, "prompt": " "})
    assert "line 1: check 'number'" in error({**good, "check": {"kind": "number"}})
    assert "no items" in error("# nothing")
    with pytest.raises(EvalError, match="neither a built-in set"):
        load_set(str(tmp_path / "missing.jsonl"))


def test_a_set_can_be_cut_to_its_first_items() -> None:
    first = built_in_set("knowledge", count=3)
    assert [i.id for i in first] == ["fact-001", "fact-002", "fact-003"]
    assert len(built_in_set("arithmetic", count=12)) == 12


def test_configurations_are_named_and_parsed_back() -> None:
    grid = default_grid()
    assert len(grid) == 1 + 4 * 2 * 3 + 3 * 3 and grid[0] == BASELINE
    assert all(parse_configuration(c.name) == c for c in grid)
    mixed = parse_configurations("m2k2-raw-vote, self-k2-moa, m2k2-raw-vote")
    assert [c.name for c in mixed] == ["one", "m2k2-raw-vote", "self-k2-moa"]
    assert mixed[1].model_name() == "dmoa:layers=2,proposers=2,strategy=raw,aggregator=vote"
    assert mixed[2].self_moa and not mixed[2].needs_swarm and mixed[1].needs_swarm
    for bad in ("m1k0-raw-moa", "m1k2-moa", "three", "self-k0-vote"):
        with pytest.raises(EvalError, match=r"configuration|needs"):
            parse_configuration(bad)
