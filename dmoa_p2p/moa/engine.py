"""One MoA query over the network (plan, layers, aggregation), and serving peers' tasks."""

from __future__ import annotations

import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from dmoa_p2p.backends import ChatMessage, GenerationParams
from dmoa_p2p.moa._types import (
    Aggregator,
    LayerPlan,
    PeerLoad,
    Plan,
    QueryRequest,
    Strategy,
    TokenBudget,
)
from dmoa_p2p.moa.trace import Answer, CallRecord, LayerRecord, MissingProposer, Trace
from dmoa_p2p.overlay import OverlayError
from dmoa_p2p.queue import InferenceQueue, QueueFull, Served
from dmoa_p2p.registry import load_plugin
from dmoa_p2p.wire import ChatTurn, Message, Proposal, Refusal, Task

log = logging.getLogger(__name__)
_LIVENESS_CHECK_S = 1.0  # how often a layer checks that the peers it waits for are still there

# (recipient peer id, message) -> sent, or OverlayError
SendMessage = Callable[[str, Message], Awaitable[None]]
PeerLoads = Callable[[], Sequence[PeerLoad]]


@attrs.frozen
class _Reply:
    peer_id: str
    message: Proposal | Refusal | None  # None: the task never reached the peer
    failure: str = ""


def _to_turns(messages: Sequence[ChatMessage]) -> tuple[ChatTurn, ...]:
    return tuple(ChatTurn(role=m.role, content=m.content) for m in messages)


def _from_turns(turns: Sequence[ChatTurn]) -> list[ChatMessage]:
    return [ChatMessage(role=t.role, content=t.content) for t in turns]  # type: ignore[arg-type]


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
    ) -> None:
        self.peer_id = peer_id
        self.queue = queue
        self._send = send
        self._peers = peers
        self._reachable = reachable
        self._rng = rng or random.Random()
        self._inboxes: dict[tuple[str, int], trio.MemorySendChannel[_Reply]] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the tasks that serve peers, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # ---- receiving -------------------------------------------------------------------

    async def receive(self, author: str, message: Message) -> None:
        """A verified MoA message arrived from `author`."""
        if isinstance(message, Task):
            if message.recipient == self.peer_id and self._nursery is not None:
                self._nursery.start_soon(self._serve_task, message)
        elif isinstance(message, Proposal | Refusal):
            inbox = self._inboxes.get((message.query_id, message.layer))
            if message.recipient == self.peer_id and message.origin == self.peer_id and inbox:
                # a reply after the layer closed has nowhere to go, and a peer that floods
                # replies only loses its own: neither may block this node
                with contextlib.suppress(trio.WouldBlock):
                    inbox.send_nowait(_Reply(author, message))

    async def _serve_task(self, task: Task) -> None:
        params = GenerationParams(max_tokens=task.max_tokens, temperature=task.temperature)
        reply: Message
        served: Served | None = None
        reason = "deadline passed while queued"
        with trio.move_on_after(task.deadline_s):
            try:
                served = await self.queue.submit(_from_turns(task.messages), params)
            except QueueFull as exc:
                reason = str(exc)
            except Exception as exc:  # the origin learns why; this node keeps serving
                reason = f"model failed: {exc}"
        if served is not None:
            reply = Proposal(
                query_id=task.query_id,
                layer=task.layer,
                origin=task.origin,
                recipient=task.origin,
                text=served.generation.text,
                model=self.queue.backend.model_name,
                queue_wait_s=served.queue_wait_s,
                service_s=served.service_s,
                prompt_tokens=served.generation.prompt_tokens,
                completion_tokens=served.generation.completion_tokens,
            )
        else:
            reply = Refusal(
                query_id=task.query_id,
                layer=task.layer,
                origin=task.origin,
                recipient=task.origin,
                reason=reason,
                retry_after_s=self.queue.retry_after_s(),
            )
        try:
            await self._send(task.origin, reply)
        except OverlayError as exc:
            log.info(
                "could not return layer %d of %s to %s: %s",
                task.layer,
                task.query_id,
                task.origin,
                exc,
            )

    # ---- asking ----------------------------------------------------------------------

    async def ask(self, request: QueryRequest, notes: Sequence[str] = ()) -> Answer:
        """Answer `request` with a distributed Mixture-of-Agents; never fails for a peer's sake.

        `notes` (e.g. what admission control changed) lead the trace's notes.
        """
        strategy: Strategy = load_plugin("strategy", request.strategy)()
        aggregator: Aggregator = load_plugin("aggregator", request.aggregator)()
        started = trio.current_time()
        self.queue.load.observe_arrival()
        plan = strategy.plan(request, list(self._peers()), self._rng)
        query = _Query(self, request, aggregator, plan, uuid.uuid4().hex)
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
            total_s=trio.current_time() - started,
        )
        return Answer(text, trace)


class _Query:
    """The state of one query at its origin."""

    def __init__(
        self,
        engine: MoaEngine,
        request: QueryRequest,
        aggregator: Aggregator,
        plan: Plan,
        query_id: str,
    ) -> None:
        self.engine = engine
        self.request = request
        self.aggregator = aggregator
        self.plan = plan
        self.query_id = query_id
        self.calls: list[CallRecord] = []
        self.layer_records: list[LayerRecord] = []
        self.notes: list[str] = []
        self.final_truncated: tuple[int, ...] = ()
        backend = engine.queue.backend
        self.budget = TokenBudget(
            backend.context_length, request.params.max_tokens, backend.count_tokens
        )

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
            return await self._own_call(raw, 1, "aggregator") or ""
        proposals = everything if self.plan.aggregate_all_layers else previous
        direct = self.aggregator.direct_answer(self.request.prompt, proposals)
        if direct is not None:
            return direct
        composed = self.aggregator.compose(self.request.prompt, proposals, self.budget)
        self.final_truncated = composed.truncated
        final_layer = len(self.plan.layers) + 1
        answer = await self._own_call(list(composed.messages), final_layer, "aggregator")
        if answer is None:  # the local model failed: the best proposal is better than nothing
            self.notes.append("final aggregation failed; answering with the longest proposal")
            return max(proposals, key=len, default="")
        return answer

    async def _own_call(self, messages: list[ChatMessage], layer: int, role: str) -> str | None:
        try:
            served = await self.engine.queue.submit(messages, self.request.params)
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
        return served.generation.text

    async def _layer(
        self, index: int, layer: LayerPlan, messages: list[ChatMessage], truncated: tuple[int, ...]
    ) -> list[str]:
        """Ask the origin and the layer's proposers; return the proposals that came back."""
        started = trio.current_time()
        send, inbox = trio.open_memory_channel[_Reply](2 * len(layer.proposers) + 4)
        key = (self.query_id, index)
        self.engine._inboxes[key] = send
        task = Task(
            query_id=self.query_id,
            layer=index,
            origin=self.engine.peer_id,
            recipient=self.engine.peer_id,  # a template: each copy names its proposer
            messages=_to_turns(messages),
            max_tokens=self.request.params.max_tokens,
            temperature=self.request.params.temperature,
            deadline_s=self.request.layer_timeout_s,
        )
        own: list[str] = []
        pending = set(layer.proposers)
        missing: list[MissingProposer] = []
        proposals: dict[str, str] = {}
        try:
            with trio.move_on_after(self.request.layer_timeout_s):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._own_proposal, messages, index, own)
                    for peer in layer.proposers:
                        nursery.start_soon(self._dispatch, attrs.evolve(task, recipient=peer), send)
                    await self._collect(inbox, index, pending, missing, proposals)
        finally:
            del self.engine._inboxes[key]
        missing += [MissingProposer(p, "timed out") for p in sorted(pending)]
        self.layer_records.append(
            LayerRecord(
                layer=index,
                mode=layer.mode,
                asked=layer.proposers,
                answered=((self.engine.peer_id,) if own else ()) + tuple(proposals),
                missing=tuple(missing),
                prompt_bytes=sum(len(m.content.encode()) for m in messages),
                truncated=truncated,
                elapsed_s=trio.current_time() - started,
            )
        )
        return own + list(proposals.values())

    async def _own_proposal(self, messages: list[ChatMessage], index: int, out: list[str]) -> None:
        text = await self._own_call(messages, index, "proposer")
        if text is not None:
            out.append(text)

    async def _dispatch(self, task: Task, replies: trio.MemorySendChannel[_Reply]) -> None:
        try:
            await self.engine._send(task.recipient, task)
        except OverlayError as exc:
            await replies.send(_Reply(task.recipient, None, f"unreachable: {exc}"))

    def _give_up_on_departed(self, pending: set[str], missing: list[MissingProposer]) -> None:
        # a proposer that left mid-layer will never answer: stop waiting for it
        for peer_id in sorted(pending):
            if not self.engine._reachable(peer_id):
                pending.discard(peer_id)
                missing.append(MissingProposer(peer_id, "left during the layer"))

    async def _collect(
        self,
        inbox: trio.MemoryReceiveChannel[_Reply],
        index: int,
        pending: set[str],
        missing: list[MissingProposer],
        proposals: dict[str, str],
    ) -> None:
        # the nursery also waits for the origin's own proposal
        while pending:
            reply = None
            with trio.move_on_after(_LIVENESS_CHECK_S):
                reply = await inbox.receive()
            if reply is None:
                self._give_up_on_departed(pending, missing)
                continue
            if reply.peer_id not in pending:
                continue  # not asked, or answered already
            pending.discard(reply.peer_id)
            message = reply.message
            if message is None:
                missing.append(MissingProposer(reply.peer_id, reply.failure))
                continue
            if isinstance(message, Refusal):
                missing.append(MissingProposer(reply.peer_id, f"refused: {message.reason}"))
                continue
            proposals[reply.peer_id] = message.text
            self.calls.append(
                CallRecord(
                    node=reply.peer_id,
                    layer=index,
                    role="proposer",
                    queue_wait_s=message.queue_wait_s,
                    service_s=message.service_s,
                    prompt_tokens=message.prompt_tokens,
                    completion_tokens=message.completion_tokens,
                )
            )
