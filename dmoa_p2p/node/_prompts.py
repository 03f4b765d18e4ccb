"""A node's users' prompts: admission, then the answer, each prompt counted by its outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import attrs
import trio

from dmoa_p2p.admission import (
    AdmissionContext,
    AdmissionPolicy,
    Decision,
    OperatingPoint,
    PromptRefused,
)
from dmoa_p2p.backends import TextCallback
from dmoa_p2p.exceptions import only_cancelled
from dmoa_p2p.moa import Answer, MoaEngine, ProgressCallback, QueryPlugins, QueryRequest
from dmoa_p2p.queue import InferenceQueue
from dmoa_p2p.registry import create_plugin


def load_admission(name: str, options: Mapping[str, str]) -> AdmissionPolicy:
    """An admission plugin built from its options (an attrs class whose fields they are)."""
    policy: AdmissionPolicy = create_plugin("admission", name, options)
    return policy


@attrs.frozen
class AdmittedPrompt:
    """A prompt admission let through: what to run (maybe smaller than asked) and with what."""

    decision: Decision
    plugins: QueryPlugins


class PromptDesk:
    """Admits the node's users' prompts and runs them, counting each one's outcome.

    Every prompt is counted in `outcomes` once as accepted, degraded or refused, and once
    more as answered, failed or cancelled (its asker gave up, or the node is stopping).
    """

    def __init__(
        self,
        engine: MoaEngine,
        queue: InferenceQueue,
        policy: AdmissionPolicy,
        operating_point: Callable[[], OperatingPoint],
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.policy = policy
        self.operating_point = operating_point
        self.outcomes: Counter[str] = Counter()
        # called with every answer to this node's users (e.g. to observe latencies)
        self.answer_listeners: list[Callable[[Answer], None]] = []

    def admit(self, request: QueryRequest) -> AdmittedPrompt:
        """Resolve the request's plugins, then let admission control decide.

        An unknown strategy or aggregator is a PluginError before anything is counted. Every
        prompt admission sees counts toward the users' arrival rate, refused or not:
        admission needs the load users offer, not the share it let through. A refusal is
        PromptRefused with its cause.
        """
        plugins = self.engine.resolve(request)
        self.queue.load.observe_arrival()
        queue = self.queue
        if queue.length >= queue.capacity:  # its own calls could not even be queued
            self.outcomes["refused"] += 1
            reason = f"this node's queue is full: it holds {queue.length} prompts"
            raise PromptRefused("queue_full", reason, queue.retry_after_s())
        context = AdmissionContext(
            request,
            self.operating_point(),
            self.queue.length,
            self.queue.capacity,
            trio.current_time(),
        )
        decision = self.policy.decide(context)
        if decision.action == "refuse":
            self.outcomes["refused"] += 1
            raise decision.refusal()
        self.queue.load.observe_admitted()
        self.outcomes["degraded" if decision.action == "degrade" else "accepted"] += 1
        return AdmittedPrompt(decision, plugins)

    async def answer(
        self,
        admitted: AdmittedPrompt,
        on_text: TextCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Answer:
        """Run an admitted prompt. An empty answer without an aggregation means the node's
        model could not answer at all: PromptRefused with cause `model_unavailable`.

        Cancelled (the asker left, or the node stops), the prompt counts as `cancelled`,
        never as answered.
        """
        decision = admitted.decision
        notes = (decision.reason,) if decision.reason else ()
        try:
            answer = await self.engine.ask(
                decision.request, admitted.plugins, notes, on_text, on_progress
            )
        except BaseException as exc:
            self.outcomes["cancelled" if only_cancelled(exc) else "failed"] += 1
            raise
        if not answer.text and not any(c.role == "aggregator" for c in answer.trace.calls):
            self.outcomes["failed"] += 1
            reason = "the node's model could not answer: " + "; ".join(answer.trace.notes)
            raise PromptRefused("model_unavailable", reason, self.queue.retry_after_s())
        self.outcomes["answered"] += 1
        for listener in self.answer_listeners:
            listener(answer)
        return answer
