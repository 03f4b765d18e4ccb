"""An evaluation's figures per configuration and set, and the files others read them in."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from dmoa_p2p.eval._configs import BASELINE, Configuration
from dmoa_p2p.eval._items import Item
from dmoa_p2p.eval._results import Outcome, ResultsFile
from dmoa_p2p.eval._stats import PairedComparison, accuracy_interval, compare_paired
from dmoa_p2p.simulate import percentile

ALL_SETS = "all"


@attrs.frozen
class Row:
    """One configuration on one set (or on all of them)."""

    configuration: str
    set: str
    answers: int
    correct: int
    low: float  # Wilson 95 % interval of the accuracy
    high: float
    against_baseline: PairedComparison | None  # None for the baseline itself
    latency_p50_s: float
    latency_p95_s: float
    mean_queue: float | None  # mean over the samples taken while this configuration ran
    inferences_per_answer: float
    tokens_per_answer: float
    failed: int  # no answer (refused, unreachable): counted as wrong

    @property
    def accuracy(self) -> float:
        return self.correct / self.answers if self.answers else 0.0

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["accuracy"] = self.accuracy
        return data


def summarise(
    results: ResultsFile, configurations: Sequence[Configuration], items: Sequence[Item]
) -> list[Row]:
    """A row per configuration and set, and per configuration over all sets, in the
    configurations' order; each against the baseline on the items both answered. Only
    `items` count: a file resumed with more items also holds answers to other ones. Each
    stored answer is scored again by its item's check as it is now, so that a corrected
    check applies to the answers made before."""
    wanted = {(item.set, item.id): item for item in items}
    outcomes = [
        attrs.evolve(o, correct=not o.error and wanted[o.set, o.item].score(o.answer))
        for o in results.outcomes.values()
        if (o.set, o.item) in wanted
    ]
    sets = sorted({o.set for o in outcomes})
    baseline = _per_item(o for o in outcomes if o.configuration == BASELINE.name)
    rows = []
    for configuration in configurations:
        mine = [o for o in outcomes if o.configuration == configuration.name]
        queue = [q.mean_length for q in results.queue if q.configuration == configuration.name]
        for set_name in [*sets, ALL_SETS] if len(sets) > 1 else sets:
            chosen = [o for o in mine if set_name in (ALL_SETS, o.set)]
            if chosen:
                rows.append(_row(configuration, set_name, chosen, baseline, queue))
    return rows


def _row(
    configuration: Configuration,
    set_name: str,
    outcomes: Sequence[Outcome],
    baseline: dict[tuple[str, str], float],
    queue: Sequence[float],
) -> Row:
    correct = sum(o.correct for o in outcomes)
    mine = _per_item(outcomes)
    low, high = accuracy_interval(list(mine.values()))
    comparison = None
    if not configuration.is_baseline:
        both = [key for key in mine if key in baseline]
        comparison = compare_paired([mine[k] for k in both], [baseline[k] for k in both])
    answered = [o for o in outcomes if not o.error]
    latencies = [o.latency_s for o in answered]
    return Row(
        configuration.name,
        set_name,
        len(outcomes),
        correct,
        low,
        high,
        comparison,
        percentile(latencies, 0.5),
        percentile(latencies, 0.95),
        statistics.fmean(queue) if queue else None,
        statistics.fmean(o.inferences for o in answered) if answered else 0.0,
        statistics.fmean(o.tokens for o in answered) if answered else 0.0,
        len(outcomes) - len(answered),
    )


def _per_item(outcomes: Iterable[Outcome]) -> dict[tuple[str, str], float]:
    """Each item's score: the share of its repeats answered right (1 or 0 without repeats)."""
    tally: dict[tuple[str, str], list[int]] = {}
    for o in outcomes:
        tally.setdefault((o.set, o.item), []).append(int(o.correct))
    return {key: sum(right) / len(right) for key, right in tally.items()}


def write_alpaca_outputs(
    results: ResultsFile, items: Sequence[Item], directory: Path
) -> list[Path]:
    """One AlpacaEval model-outputs file per configuration (`instruction`, `output`,
    `generator`, `dataset`), first repeat only, in the order of `items`, for
    `alpaca_eval --model_outputs`."""
    directory.mkdir(parents=True, exist_ok=True)
    order = {(item.set, item.id): i for i, item in enumerate(items)}
    chosen = [o for o in results.outcomes.values() if o.repeat == 0 and (o.set, o.item) in order]
    chosen.sort(key=lambda o: order[o.set, o.item])
    by_configuration: dict[str, list[dict[str, str]]] = {}
    for outcome in chosen:
        by_configuration.setdefault(outcome.configuration, []).append(
            {
                "instruction": outcome.prompt,
                "output": outcome.answer,
                "generator": f"dmoa-p2p {outcome.configuration}",
                "dataset": outcome.set,
            }
        )
    written = []
    for name, entries in by_configuration.items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n", "utf-8")
        written.append(path)
    return written
