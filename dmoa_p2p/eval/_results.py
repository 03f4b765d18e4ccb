"""An evaluation's results file: one JSON line per answer, appended, so a rerun resumes."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

from dmoa_p2p.eval._checks import EvalError

FORMAT = "dmoa-p2p-eval/1"
_converter = cattrs.Converter(forbid_extra_keys=True)


@attrs.frozen
class Outcome:
    """One answer to one item by one configuration, scored."""

    configuration: str
    set: str
    item: str
    repeat: int
    prompt: str
    answer: str
    correct: bool
    latency_s: float
    inferences: int
    tokens: int
    error: str = ""  # why there is no answer (it counts as wrong)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.configuration, self.set, self.item, self.repeat)


@attrs.frozen
class QueueSample:
    configuration: str
    at_s: float  # since the run started
    mean_length: float  # over the nodes sampled


class ResultsFile:
    """Reads what a file already holds, refuses one made with other settings, appends.

    The first line names the format and the settings (seed, temperatures, token limit,
    target): answers made otherwise are not comparable, so a rerun with other settings
    must use another file."""

    def __init__(self, path: Path, settings: Mapping[str, Any]) -> None:
        self.path = path
        self.settings = dict(settings)
        self.outcomes: dict[tuple[str, str, str, int], Outcome] = {}
        self.queue: list[QueueSample] = []
        if path.exists() and path.stat().st_size > 0:
            self._read()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write({"format": FORMAT, "settings": self.settings})

    def done(self, key: tuple[str, str, str, int]) -> bool:
        """Answered: an outcome with an error (the server was down) is asked again, and the
        new outcome, appended later, replaces it when the file is read."""
        outcome = self.outcomes.get(key)
        return outcome is not None and not outcome.error

    def add(self, outcome: Outcome) -> None:
        self.outcomes[outcome.key] = outcome
        self._write({"outcome": attrs.asdict(outcome)})

    def add_queue(self, sample: QueueSample) -> None:
        self.queue.append(sample)
        self._write({"queue": attrs.asdict(sample)})

    def of(self, configuration: str) -> Iterator[Outcome]:
        return (o for o in self.outcomes.values() if o.configuration == configuration)

    def _write(self, data: Mapping[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as out:  # one line, flushed at close
            out.write(json.dumps(data, ensure_ascii=False) + "\n")

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0])
        except (ValueError, IndexError):
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise EvalError(f"{self.path} is not a dmoa-p2p eval results file")
        if header.get("settings") != self.settings:
            differ = sorted(
                key
                for key in set(self.settings) | set(header.get("settings") or {})
                if self.settings.get(key) != (header.get("settings") or {}).get(key)
            )
            raise EvalError(
                f"{self.path} holds results made with other settings ({', '.join(differ)}): "
                "rerun with the same settings to resume, or give another --results file"
            )
        for number, line in enumerate(lines[1:], start=2):
            try:
                data = json.loads(line)
                if "outcome" in data:
                    outcome = _converter.structure(data["outcome"], Outcome)
                    self.outcomes[outcome.key] = outcome
                elif "queue" in data:
                    self.queue.append(_converter.structure(data["queue"], QueueSample))
            except (ValueError, TypeError, cattrs.BaseValidationError):
                if number == len(lines):  # a run cut off while writing: drop the piece
                    self.path.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
                    continue
                raise EvalError(f"{self.path} line {number} is damaged") from None
