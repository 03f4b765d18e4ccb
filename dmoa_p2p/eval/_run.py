"""Running an evaluation: every configuration on every item, scored, appended as it goes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from dmoa_p2p.backends import ChatMessage
from dmoa_p2p.eval._checks import EvalError
from dmoa_p2p.eval._configs import Configuration
from dmoa_p2p.eval._items import Item
from dmoa_p2p.eval._results import Outcome, QueueSample, ResultsFile
from dmoa_p2p.eval._target import Reply, Target
from dmoa_p2p.moa import Aggregator, TokenBudget
from dmoa_p2p.registry import PluginError, create_plugin

QUEUE_SAMPLE_S = 1.0
SELF_MOA_CONTEXT = 2048  # tokens the aggregation prompt of Self-MoA may fill, answer included

Progress = Callable[[int, int], None]  # items done (of all, resumed ones too), total


@attrs.frozen
class EvalSettings:
    """What every answer of a run shares; a results file holds one run's settings."""

    seed: int = 1
    repeats: int = 1
    temperature: float = 0.0  # every answer's, but Self-MoA's samples
    sample_temperature: float = 0.7  # Self-MoA's samples: one model, k + 1 different answers
    max_tokens: int = 128
    concurrency: int = 1  # questions in flight at once (queues form above 1)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def item_seed(seed: int, item: Item, repeat: int) -> int:
    """The sampling seed of one item's answer in one repeat: the same for every
    configuration, so that they differ only in how the answer is made."""
    digest = hashlib.sha256(f"{seed}/{item.set}/{item.id}/{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


async def run_eval(
    asked: Target,
    sampled: Sequence[Target],
    items: Sequence[Item],
    configurations: Sequence[Configuration],
    settings: EvalSettings,
    results: ResultsFile,
    progress: Progress | None = None,
) -> None:
    """Answer what `results` does not hold yet, one configuration after the other, and
    sample the queue lengths of `sampled` (the swarm's nodes) every second meanwhile."""
    needs_swarm = [c.name for c in configurations if c.needs_swarm]
    if needs_swarm and not asked.info.dmoa_node:
        raise EvalError(
            f"{asked.info.base_url} is no dmoa-p2p node, so it cannot run "
            f"{', '.join(needs_swarm)}: ask one, m0 and self-k* configurations only"
        )
    total = len(configurations) * settings.repeats * len(items)
    done = [0]  # answered or resumed, for `progress`

    def one_more(count: int = 1) -> None:
        done[0] += count
        if progress is not None:
            progress(done[0], total)

    started = trio.current_time()
    for configuration in configurations:
        todo = [
            (item, repeat)
            for repeat in range(settings.repeats)
            for item in items
            if not results.done((configuration.name, item.set, item.id, repeat))
        ]
        one_more(settings.repeats * len(items) - len(todo))
        if not todo:
            continue
        limit = trio.Semaphore(settings.concurrency)
        # one configuration at a time: the queue samples taken meanwhile are its own
        async with trio.open_nursery() as nursery:
            sampler = trio.CancelScope()
            nursery.start_soon(
                _sample_queues, sampled, configuration.name, results, started, sampler
            )
            async with trio.open_nursery() as answers:
                for item, repeat in todo:
                    await limit.acquire()
                    job = _Job(asked, configuration, item, repeat, settings)
                    answers.start_soon(_answer_and_record, job, results, limit, one_more)
            sampler.cancel()


@attrs.frozen
class _Job:
    target: Target
    configuration: Configuration
    item: Item
    repeat: int
    settings: EvalSettings


async def _answer_and_record(
    job: _Job, results: ResultsFile, limit: trio.Semaphore, one_more: Callable[[], None]
) -> None:
    try:
        outcome = await answer(job.target, job.configuration, job.item, job.repeat, job.settings)
        results.add(outcome)
        one_more()
    finally:
        limit.release()


async def answer(
    target: Target,
    configuration: Configuration,
    item: Item,
    repeat: int,
    settings: EvalSettings,
) -> Outcome:
    """One item answered by one configuration and scored; a refusal or failure is an
    outcome too (wrong, with its reason), so every item ends with one."""
    seed = item_seed(settings.seed, item, repeat)
    question = (ChatMessage("user", item.prompt),)
    try:
        if configuration.self_moa:
            reply = await _self_moa(target, configuration, item.prompt, seed, settings)
        else:
            model = None if configuration.is_baseline else configuration.model_name()
            reply = await target.chat(
                question,
                model=model,
                temperature=settings.temperature,
                seed=seed,
                max_tokens=settings.max_tokens,
            )
    except EvalError as exc:
        return Outcome(
            configuration.name, item.set, item.id, repeat, item.prompt, "", False, 0.0, 0, 0,
            str(exc),
        )
    return Outcome(
        configuration.name,
        item.set,
        item.id,
        repeat,
        item.prompt,
        reply.text,
        item.score(reply.text),
        reply.latency_s,
        reply.inferences,
        reply.tokens,
    )


async def _self_moa(
    target: Target, configuration: Configuration, prompt: str, seed: int, settings: EvalSettings
) -> Reply:
    """Self-MoA: the one model sampled k + 1 times, then its own aggregator (an LLM call
    with the aggregator's prompt, or none for one that answers directly, like `vote`)."""
    try:
        aggregator: Aggregator = create_plugin("aggregator", configuration.aggregator)
    except PluginError as exc:
        raise EvalError(str(exc)) from None
    question = (ChatMessage("user", prompt),)
    samples = [
        await target.chat(
            question,
            temperature=settings.sample_temperature,
            seed=seed + i,
            max_tokens=settings.max_tokens,
        )
        for i in range(configuration.proposers + 1)
    ]
    proposals = [s.text for s in samples]
    direct = aggregator.direct_answer(prompt, proposals)
    parts = list(samples)
    if direct is None:
        budget = TokenBudget(SELF_MOA_CONTEXT, settings.max_tokens, _rough_tokens)
        composition = aggregator.compose(prompt, proposals, budget)
        final = await target.chat(
            composition.messages,
            temperature=settings.temperature,
            seed=seed,
            max_tokens=settings.max_tokens,
        )
        parts.append(final)
        direct = final.text
    return Reply(
        direct,
        sum(p.latency_s for p in parts),
        sum(p.inferences for p in parts),
        sum(p.tokens for p in parts),
    )


def _rough_tokens(text: str) -> int:
    return len(text) // 3 + 1  # generous: small models' tokenizers split finer than 4 chars


async def _sample_queues(
    targets: Sequence[Target],
    configuration: str,
    results: ResultsFile,
    started: float,
    scope: trio.CancelScope,
) -> None:
    with scope:
        while targets:
            lengths = [q for q in [await t.queue_length() for t in targets] if q is not None]
            if lengths:
                mean = sum(lengths) / len(lengths)
                results.add_queue(QueueSample(configuration, trio.current_time() - started, mean))
            await trio.sleep(QUEUE_SAMPLE_S)
