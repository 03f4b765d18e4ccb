"""Question sets: the project's own (shipped or generated from a seed) and users' JSONL files."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from dmoa_p2p.eval._checks import Checker, EvalError, build_check, choice_letters

BUILT_IN_SETS = ("arithmetic", "knowledge", "instructions")
MAX_PROMPT_CHARS = 4000
MAX_ITEMS = 100_000
CHOICE_INSTRUCTION = "Answer with the letter of the right choice only."
NUMBER_INSTRUCTION = "Answer with the number only."


@attrs.frozen
class Item:
    """One question: what the model is asked and the code that scores its answer."""

    id: str
    set: str
    prompt: str  # as sent: a choice item's options are in it
    check: Mapping[str, Any]  # the check as written in the set
    checker: Checker = attrs.field(eq=False, repr=False)
    level: str = ""

    def score(self, answer: str) -> bool:
        return self.checker(answer)


def item_of(data: Any, set_name: str, where: str) -> Item:
    """An item from one JSON object of a set file; EvalError saying what is wrong."""
    if not isinstance(data, dict):
        raise EvalError(f"{where}: an item is a JSON object")
    unknown = set(data) - {"id", "prompt", "check", "level"}
    if unknown:
        raise EvalError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    item_id, prompt, level = data.get("id"), data.get("prompt"), data.get("level", "")
    if not isinstance(item_id, str) or not item_id or len(item_id) > 200:
        raise EvalError(f'{where}: "id" must be a string of 1 to 200 characters')
    if not isinstance(prompt, str) or not prompt.strip():
        raise EvalError(f'{where}: "prompt" must be a non-empty string')
    if not isinstance(level, str):
        raise EvalError(f'{where}: "level" must be a string')
    spec = data.get("check")
    try:
        checker = build_check(spec)
    except EvalError as exc:
        raise EvalError(f"{where}: {exc}") from None
    assert isinstance(spec, dict)
    if spec["kind"] == "choice":
        options = "\n".join(
            f"{letter}. {option}"
            for letter, option in zip(choice_letters(6), spec["options"], strict=False)
        )
        prompt = f"{prompt.strip()}\n\n{options}\n\n{CHOICE_INSTRUCTION}"
    if len(prompt) > MAX_PROMPT_CHARS:
        raise EvalError(f"{where}: the prompt is over {MAX_PROMPT_CHARS} characters")
    return Item(item_id, set_name, prompt, spec, checker, level)


def read_set(path: Path) -> list[Item]:
    """A user's set: one JSON object per line (blank lines and lines starting # skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalError(f"cannot read question set {path}: {exc.strerror}") from None
    return _parse(lines, path.stem, str(path))


def built_in_set(name: str, *, seed: int = 1, count: int | None = None) -> list[Item]:
    """One of the project's sets: `arithmetic` is generated from `seed` (`count` items, 200
    by default), the others are the files shipped in the package (`count` first items)."""
    if name == "arithmetic":
        return arithmetic_items(seed, 200 if count is None else count)
    if name not in BUILT_IN_SETS:
        raise EvalError(f"no built-in set {name!r}; built in: {', '.join(BUILT_IN_SETS)}")
    text = resources.files("dmoa_p2p.eval").joinpath(f"data/{name}.jsonl").read_text("utf-8")
    items = _parse(text.splitlines(), name, f"built-in set {name}")
    return items if count is None else items[:count]


def load_set(name_or_path: str, *, seed: int = 1, count: int | None = None) -> list[Item]:
    """A built-in set by name, else a JSONL file by path."""
    if name_or_path in BUILT_IN_SETS:
        return built_in_set(name_or_path, seed=seed, count=count)
    path = Path(name_or_path)
    if not path.exists():
        raise EvalError(
            f"{name_or_path!r} is neither a built-in set ({', '.join(BUILT_IN_SETS)}) nor a file"
        )
    items = read_set(path)
    return items if count is None else items[:count]


def _parse(lines: Sequence[str], set_name: str, source: str) -> list[Item]:
    items: list[Item] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source} line {number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise EvalError(f"{where}: not JSON ({exc})") from None
        item = item_of(data, set_name, where)
        if item.id in seen:
            raise EvalError(f"{where}: id {item.id!r} is used twice")
        seen.add(item.id)
        items.append(item)
        if len(items) > MAX_ITEMS:
            raise EvalError(f"{source}: more than {MAX_ITEMS} items")
    if not items:
        raise EvalError(f"{source}: no items")
    return items


_COUNTED_WORDS = (
    "strawberry", "banana", "mississippi", "committee", "bookkeeper", "balloon", "assessment",
    "successful", "parallel", "engineering", "possession", "cinnamon", "difference", "tattoo",
)
_LIST_THINGS = (
    "apple", "chair", "river", "pencil", "cloud", "guitar", "window", "tiger", "candle",
    "bottle", "garden", "rocket", "mirror", "basket", "ladder", "violin", "planet", "carpet",
)
LEVELS = ("easy", "medium", "hard", "counting")


def arithmetic_items(seed: int, count: int) -> list[Item]:
    """`count` arithmetic and counting questions from `seed`, the four `LEVELS` in turn.

    easy: sums and differences under 100; medium: two-digit by one-digit products and
    three-term sums; hard: two-digit by two-digit products and (a + b) × c; counting:
    letters in a word, or items in a list. The same seed gives the same items."""
    rng = random.Random(f"dmoa-eval-arithmetic-{seed}")
    items = []
    for index in range(count):
        level = LEVELS[index % len(LEVELS)]
        question, answer = _arithmetic(rng, level)
        prompt = f"{question} {NUMBER_INSTRUCTION}"
        spec = {"kind": "number", "answer": answer}
        items.append(
            Item(f"arith-{seed}-{index}", "arithmetic", prompt, spec, build_check(spec), level)
        )
    return items


def _arithmetic(rng: random.Random, level: str) -> tuple[str, int]:
    if level == "easy":
        a, b = rng.randint(2, 60), rng.randint(2, 39)
        if rng.random() < 0.5:
            return f"What is {a} + {b}?", a + b
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", a - b
    if level == "medium":
        if rng.random() < 0.5:
            a, b = rng.randint(11, 99), rng.randint(3, 9)
            return f"What is {a} × {b}?", a * b
        a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} + {b} + {c}?", a + b + c
    if level == "hard":
        if rng.random() < 0.5:
            a, b = rng.randint(12, 99), rng.randint(12, 99)
            return f"What is {a} × {b}?", a * b
        a, b, c = rng.randint(5, 40), rng.randint(5, 40), rng.randint(3, 12)
        return f"What is ({a} + {b}) × {c}?", (a + b) * c
    if rng.random() < 0.5:
        word = rng.choice(_COUNTED_WORDS)
        letter = rng.choice(sorted(set(word)))
        return f'How many times does the letter "{letter}" appear in the word "{word}"?', (
            word.count(letter)
        )
    things = rng.sample(_LIST_THINGS, rng.randint(3, 12))
    return f"How many items are in this list: {', '.join(things)}?", len(things)
