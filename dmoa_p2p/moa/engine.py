"""One MoA query over the network (plan, layers, aggregation), and serving peers' tasks."""

from __future__ import annotations

import contextlib
import logging
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

import attrs
import trio

from dmoa_p2p.backends import ChatMessage, GenerationParams, TextCallback
from dmoa_p2p.gossip import PeerUnreachable
from dmoa_p2p.moa._fair_share import FairRateLimiter, TaskRefusal, TaskRefusalCause
from dmoa_p2p.moa._layer import LayerContext, LayerRun, PeerLoads, Reply, SendMessage
from dmoa_p2p.moa._query import QueryRun
from dmoa_p2p.moa._types import Aggregator, QueryRequest, Strategy
from dmoa_p2p.moa.progress import ProgressCallback
from dmoa_p2p.moa.trace import Answer, Trace
from dmoa_p2p.queue import InferenceQueue, QueueFull, Served
from dmoa_p2p.registry import create_plugin
from dmoa_p2p.wire import ChatTurn, Message, Proposal, Refusal, Task

log = logging.getLogger(__name__)

P = TypeVar("P")

DEPARTURE_CHECK_S = 1.0  # how often the engine checks that awaited proposers are still there


def _from_turns(turns: Sequence[ChatTurn]) -> list[ChatMessage]:
    return [ChatMessage(role=t.role, content=t.content) for t in turns]  # type: ignore[arg-type]


@attrs.frozen
class QueryPlugins:
    """The strategy and aggregator a query runs with, resolved before it is admitted."""

    strategy: Strategy
    aggregator: Aggregator


class MoaEngine:
    """Runs this node's queries across peers and answers peers' tasks from the local queue."""

    def __init__(
        self,
        peer_id: str,
        queue: InferenceQueue,
        send: SendMessage,
        peers: PeerLoads,
        reachable: Callable[[str], bool],
        rng: random.Random | None = None,
        plugin_options: Callable[[str, str], Mapping[str, str]] | None = None,
        fair_share: bool = True,
    ) -> None:
        """`plugin_options(kind, name)` gives a strategy's or aggregator's options; without
        `fair_share` peers' tasks are not held to their fair rate (a swarm of one's own)."""
        self.peer_id = peer_id
        self.queue = queue
        self.layer_context = LayerContext(peer_id, send, peers, reachable, rng or random.Random())
        self._layers: dict[tuple[str, int], LayerRun] = {}  # this node's open layers
        self._nursery: trio.Nursery | None = None
        # one instance per plugin name for the node's lifetime, so that state they keep lasts
        self._strategies: dict[str, Strategy] = {}
        self._aggregators: dict[str, Aggregator] = {}
        self._plugin_options = plugin_options or (lambda _kind, _name: {})
        # peers' tasks: each origin held to its fair rate; refused ones counted by cause
        self.fair_share = FairRateLimiter() if fair_share else None
        self.task_refusals: Counter[TaskRefusalCause] = Counter()

    def resolve(self, request: QueryRequest) -> QueryPlugins:
        """The request's strategy and aggregator; PluginError if either name is unknown."""
        return QueryPlugins(
            self._instance(self._strategies, "strategy", request.strategy),
            self._instance(self._aggregators, "aggregator", request.aggregator),
        )

    def _instance(self, made: dict[str, P], kind: str, name: str) -> P:
        if name not in made:
            made[name] = create_plugin(kind, name, self._plugin_options(kind, name))
        return made[name]

    @contextlib.contextmanager
    def open_layer(self, query_id: str, index: int, run: LayerRun) -> Iterator[None]:
        """Route the replies to layer `index` of `query_id` to `run` while the block runs."""
        self._layers[(query_id, index)] = run
        try:
            yield
        finally:
            del self._layers[(query_id, index)]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the tasks that serve peers, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_departures)
            task_status.started()
            await trio.sleep_forever()

    async def _watch_departures(self) -> None:
        """Tell open layers which of their proposers left: one check for all of them."""
        while True:
            await trio.sleep(DEPARTURE_CHECK_S)
            for run in list(self._layers.values()):
                run.notice_departures()

    # ---- receiving -------------------------------------------------------------------

    async def receive(self, author: str, message: Message) -> None:
        """A verified MoA message arrived from `author`."""
        if isinstance(message, Task):
            if message.recipient == self.peer_id and self._nursery is not None:
                self._nursery.start_soon(self._serve_task, message)
        elif isinstance(message, Proposal | Refusal):
            run = self._layers.get((message.query_id, message.layer))
            if message.recipient == self.peer_id and message.origin == self.peer_id and run:
                run.deliver(Reply(author, message))

    def over_fair_rate(self, task: Task) -> TaskRefusal | None:
        """Why `task` is refused before anything else is spent on it: its origin, known to be
        genuine, is over its fair rate (`FairRateLimiter`, μ/n); None spends one of its tokens.

        The node asks this of every task addressed to it as it arrives (the wire gate's
        precheck), so a flooder's excess costs no signature check and no signed refusal.
        """
        if task.recipient != self.peer_id or self.fair_share is None:
            return None
        devices = 1 + len(self.layer_context.peers())
        return self.fair_share.refusal(task.origin, self.queue.load, devices)

    async def _serve_task(self, task: Task) -> None:
        """Answer a peer's task within its share of this node's queue, or say why not.

        Beyond its share of the queue, or past its deadline, the task is refused with the
        reason and when to retry; every refusal is counted by cause in `task_refusals`.
        """
        outcome = await self._run_task(task)
        reply: Message
        if isinstance(outcome, TaskRefusal):
            self.task_refusals[outcome.cause] += 1
            reply = Refusal(
                query_id=task.query_id,
                layer=task.layer,
                origin=task.origin,
                recipient=task.origin,
                reason=outcome.reason,
                retry_after_s=outcome.retry_after_s,
            )
        else:
            reply = Proposal(
                query_id=task.query_id,
                layer=task.layer,
                origin=task.origin,
                recipient=task.origin,
                text=outcome.generation.text,
                model=self.queue.backend.model_name,
                queue_wait_s=outcome.queue_wait_s,
                service_s=outcome.service_s,
                prompt_tokens=outcome.generation.prompt_tokens,
                completion_tokens=outcome.generation.completion_tokens,
            )
        try:
            await self.layer_context.send(task.origin, reply)
        except PeerUnreachable as exc:
            log.info(
                "could not return layer %d of %s to %s: %s",
                task.layer,
                task.query_id,
                task.origin,
                exc,
            )

    async def _run_task(self, task: Task) -> Served | TaskRefusal:
        """The task through the queue as its origin's, before its deadline; or why not."""
        params = GenerationParams(
            max_tokens=task.max_tokens, temperature=task.temperature, seed=task.seed
        )
        with trio.move_on_after(task.deadline_s):
            try:
                messages = _from_turns(task.messages)
                return await self.queue.submit(messages, params, origin=task.origin)
            except QueueFull as exc:
                return TaskRefusal(exc.cause, str(exc), exc.retry_after_s)
            except Exception as exc:  # the origin learns why; this node keeps serving
                reason = f"model failed: {exc}"
                return TaskRefusal("model_failed", reason, self.queue.retry_after_s())
        reason = "deadline passed while queued"
        return TaskRefusal("deadline", reason, self.queue.retry_after_s())

    # ---- asking ----------------------------------------------------------------------

    async def ask(
        self,
        request: QueryRequest,
        plugins: QueryPlugins | None = None,
        notes: Sequence[str] = (),
        on_text: TextCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Answer:
        """Answer `request` with a distributed Mixture-of-Agents; never fails for a peer's sake.

        `plugins` are the request's, from `resolve` (resolved here if not given). `notes`
        (e.g. what admission control changed) lead the trace's notes. `on_text` gets the
        answer's text as the final aggregation produces it (the single call when M = 0; an
        aggregator's direct answer in one piece): the pieces add up to the answer.
        `on_progress` hears of each layer's start, each proposal and the final step.

        With no peers at all, a plan of M >= 1 layers would only have the local model
        aggregate its own single proposal: the local model answers alone, in one call, and
        the trace says so.
        """
        plugins = plugins or self.resolve(request)
        context = self.layer_context
        started = context.clock()
        peers = list(context.peers())
        plan = plugins.strategy.plan(request, peers, context.rng)
        alone = ""
        if plan.layers and not peers:
            planned = len(plan.layers)
            alone = f"no peers available: the local model answers alone (M=0, not {planned})"
            plan = attrs.evolve(plan, layers=(), notes=(*plan.notes, alone))
        query = QueryRun(
            self, request, plugins.aggregator, plan, uuid.uuid4().hex, on_text, on_progress, alone
        )
        text = await query.run()
        trace = Trace(
            query_id=query.query_id,
            origin=self.peer_id,
            strategy=request.strategy,
            aggregator=request.aggregator,
            layers_requested=request.layers,
            proposers_requested=request.proposers,
            notes=(*notes, *plan.notes, *query.notes),
            layers=tuple(query.layer_records),
            calls=tuple(query.calls),
            final_truncated=query.final_truncated,
            total_s=context.clock() - started,
        )
        return Answer(text, trace, query.finish_reason)
