"""One query at its origin: its layers one after another, then the final aggregation."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from dmoa_p2p.backends import ChatMessage, TextCallback, cut_at_stop
from dmoa_p2p.moa._layer import LayerContext, LayerRun
from dmoa_p2p.moa._types import Aggregator, LayerPlan, Plan, QueryRequest, TokenBudget
from dmoa_p2p.moa.progress import (
    FinalStarted,
    LayerDone,
    LayerStarted,
    Progress,
    ProgressCallback,
    ProposalReceived,
)
from dmoa_p2p.moa.trace import CallRecord, FinishReason, LayerRecord
from dmoa_p2p.queue import InferenceQueue, QueueFull, Served
from dmoa_p2p.wire import ChatTurn, Task


class QueryHost(Protocol):
    """What a query needs of its engine: who it is, its queue, and its open layers."""

    peer_id: str
    queue: InferenceQueue
    layer_context: LayerContext

    def open_layer(
        self, query_id: str, index: int, run: LayerRun
    ) -> contextlib.AbstractContextManager[None]: ...


class QueryRun:
    """The state of one query at its origin."""

    def __init__(
        self,
        engine: QueryHost,
        request: QueryRequest,
        aggregator: Aggregator,
        plan: Plan,
        query_id: str,
        on_text: TextCallback | None = None,
        on_progress: ProgressCallback | None = None,
        alone: str = "",
    ) -> None:
        """`alone` says why the local model answers alone although layers were asked for."""
        self.engine = engine
        self.on_text = on_text
        self.on_progress = on_progress
        self.alone = alone
        self.streamed: list[str] = []  # the answer's pieces already passed to `on_text`
        self.request = request
        self.aggregator = aggregator
        self.plan = plan
        self.query_id = query_id
        self.calls: list[CallRecord] = []
        self.layer_records: list[LayerRecord] = []
        self.notes: list[str] = []
        self.final_truncated: tuple[int, ...] = ()
        self.finish_reason: FinishReason = "stop"
        self.avoid: set[str] = set()  # peers that refused or were unreachable in this query
        backend = engine.queue.backend
        self.budget = TokenBudget(
            backend.context_length, request.params.max_tokens, backend.count_tokens
        )

    def seed_for(self, peer_id: str) -> int:
        """A proposer's sampling seed: one per node and query (proposers of one model must
        not all say the same), reproducible from the user's seed if given."""
        user_seed = self.request.params.seed
        key = f"{self.query_id if user_seed is None else user_seed}/{peer_id}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")

    def _report(self, event: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    async def run(self) -> str:
        raw = [ChatMessage("user", self.request.prompt)]
        previous: list[str] = []
        everything: list[str] = []
        for index, layer in enumerate(self.plan.layers, start=1):
            truncated: tuple[int, ...] = ()
            messages = raw
            if layer.mode == "augmented" and previous:
                composed = self.aggregator.compose(self.request.prompt, previous, self.budget)
                messages, truncated = list(composed.messages), composed.truncated
            previous = await self._layer(index, layer, messages, truncated)
            everything += previous
        if not self.plan.layers:
            self._report(FinalStarted(0, self.alone))
            return await self._final_call(raw) or ""
        proposals = everything if self.plan.aggregate_all_layers else previous
        self._report(FinalStarted(len(proposals)))
        direct = self.aggregator.direct_answer(self.request.prompt, proposals)
        if direct is not None:
            return self._answer_without_model(direct)
        composed = self.aggregator.compose(self.request.prompt, proposals, self.budget)
        self.final_truncated = composed.truncated
        answer = await self._final_call(list(composed.messages))
        if answer is not None:
            return answer
        if self.streamed:  # the asker has part of an answer: that is the answer it keeps
            self.notes.append("final aggregation failed mid-answer; the answer is cut short")
            return "".join(self.streamed)
        self.notes.append("final aggregation failed; answering with the longest proposal")
        return self._answer_without_model(max(proposals, key=len, default=""))

    def _answer_without_model(self, text: str) -> str:
        """A proposal as the answer, cut at the user's stop strings as the model's would be."""
        text, _stopped = cut_at_stop(text, self.request.params.stop)
        self._emit(text)
        return text

    async def _final_call(self, messages: list[ChatMessage]) -> str | None:
        on_text = None if self.on_text is None else self._emit
        layer = len(self.plan.layers) + 1
        served = await self._own_call(messages, layer, "aggregator", on_text)
        if served is None:
            return None
        self.finish_reason = "length" if served.generation.finish_reason == "length" else "stop"
        return served.generation.text

    def _emit(self, text: str) -> None:
        if self.on_text is not None and text:
            self.streamed.append(text)
            self.on_text(text)

    async def _own_call(
        self,
        messages: list[ChatMessage],
        layer: int,
        role: str,
        on_text: TextCallback | None = None,
    ) -> Served | None:
        # the user's stop strings end the answer; proposals are cut by none, as peers' are
        stop = self.request.params.stop if role == "aggregator" else ()
        # the final answer takes the user's seed as given: with M = 0 the same seed gives the
        # same answer whichever node is asked, as a plain llama-server would
        seed = self.request.params.seed
        if role != "aggregator" or seed is None:
            seed = self.seed_for(self.engine.peer_id)
        params = attrs.evolve(self.request.params, seed=seed, stop=stop)
        try:
            served = await self.engine.queue.submit(messages, params, on_text)
        except QueueFull as exc:
            self.notes.append(f"layer {layer}: own model refused: {exc}")
            return None
        except Exception as exc:
            self.notes.append(f"layer {layer}: own model failed: {exc}")
            return None
        self.calls.append(
            CallRecord(
                node=self.engine.peer_id,
                layer=layer,
                role=role,  # type: ignore[arg-type]
                queue_wait_s=served.queue_wait_s,
                service_s=served.service_s,
                prompt_tokens=served.generation.prompt_tokens,
                completion_tokens=served.generation.completion_tokens,
            )
        )
        return served

    async def _layer(
        self, index: int, layer: LayerPlan, messages: list[ChatMessage], truncated: tuple[int, ...]
    ) -> list[str]:
        """Ask the origin and the layer's proposers; return the proposals that came back."""
        engine = self.engine
        params = self.request.params
        task = Task(
            query_id=self.query_id,
            layer=index,
            origin=engine.peer_id,
            recipient=engine.peer_id,  # a template: each copy names its proposer
            messages=tuple(ChatTurn(role=m.role, content=m.content) for m in messages),
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            seed=0,
            deadline_s=self.request.layer_timeout_s,
        )
        expected = len(layer.proposers) + 1  # replacements take a missing proposer's place
        counter = _LayerCounter(index, len(self.plan.layers), expected, self._report)
        run = LayerRun(
            engine.layer_context, task, layer, self.seed_for, self.avoid, counter.answered
        )
        own: list[str] = []
        self._report(LayerStarted(index, counter.layers, counter.expected))
        with (
            engine.open_layer(self.query_id, index, run),
            trio.move_on_after(self.request.layer_timeout_s),
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._own_proposal, messages, index, own, counter.answered)
                await run.collect(nursery)
        self.calls += run.calls
        record = run.record(own_answered=bool(own), truncated=truncated)
        self.layer_records.append(record)
        self._report(
            LayerDone(
                index, counter.layers, len(record.answered), counter.expected, len(record.missing)
            )
        )
        return own + list(run.proposals.values())

    async def _own_proposal(
        self,
        messages: list[ChatMessage],
        index: int,
        out: list[str],
        answered: Callable[[str], None],
    ) -> None:
        served = await self._own_call(messages, index, "proposer")
        if served is not None:
            out.append(served.generation.text)
            answered(self.engine.peer_id)


@attrs.define
class _LayerCounter:
    """Counts a layer's proposals as they arrive and reports each one."""

    layer: int
    layers: int
    expected: int
    report: Callable[[Progress], None]
    count: int = 0

    def answered(self, node: str) -> None:
        self.count += 1
        self.report(ProposalReceived(self.layer, self.layers, node, self.count, self.expected))
