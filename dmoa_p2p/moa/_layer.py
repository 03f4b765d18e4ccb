"""One layer of a query at its origin: tasks out, proposals in, re-routing, who was missing."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from dmoa_p2p.gossip import PeerUnreachable
from dmoa_p2p.moa._types import LayerPlan, PeerLoad
from dmoa_p2p.moa.trace import CallRecord, LayerRecord, MissingProposer
from dmoa_p2p.wire import Message, Proposal, Refusal, Task

# (recipient peer id, message) -> sent, or PeerUnreachable
SendMessage = Callable[[str, Message], Awaitable[None]]
PeerLoads = Callable[[], Sequence[PeerLoad]]


@attrs.frozen
class LayerContext:
    """What a layer may use of its node: who it is, how to send, whom it sees, and dice."""

    origin: str  # this node's peer id
    send: SendMessage
    peers: PeerLoads  # the live peers, as their presence describes them
    reachable: Callable[[str], bool]  # False once a peer certainly cannot answer any more
    rng: random.Random
    clock: Callable[[], float] = trio.current_time


@attrs.frozen
class Reply:
    peer_id: str
    message: Proposal | Refusal | None  # None: the task never reached the peer, or it left
    failure: str = ""


class LayerRun:
    """Sends the layer's tasks and collects replies until every proposer is accounted for.

    A proposer that refuses, cannot be reached or leaves mid-layer is replaced by a live peer
    not yet asked in this layer (and not yet refused in this query), at most k times per
    layer; one that stays silent is reported when the layer's deadline cancels the
    collection.
    """

    def __init__(
        self,
        context: LayerContext,
        task: Task,
        layer: LayerPlan,
        seed_for: Callable[[str], int],
        avoid: set[str],
        on_proposal: Callable[[str], None] = lambda _peer_id: None,
    ) -> None:
        """`task` is the layer's task with the origin as recipient: each copy names its
        proposer and gets its seed from `seed_for`. `avoid` holds the peers that refused or
        were unreachable earlier in the query; this layer adds its own. `on_proposal` hears
        of each peer whose proposal arrived."""
        self.context = context
        self.index = task.layer
        self.layer = layer
        self.asked: list[str] = list(layer.proposers)
        self.pending = set(layer.proposers)
        self.sent: set[str] = set()  # proposers whose task was handed over
        self.missing: list[MissingProposer] = []
        self.replacements: list[str] = []
        self.proposals: dict[str, str] = {}
        self.calls: list[CallRecord] = []  # the proposers' calls, for the query's trace
        self.started = context.clock()
        # replies from peers not asked are dropped when full: a flooder cannot block anyone
        self.replies, self._inbox = trio.open_memory_channel[Reply](4 * len(self.asked) + 8)
        self._task = task
        self._seed_for = seed_for
        self._avoid = avoid
        self._on_proposal = on_proposal

    async def collect(self, nursery: trio.Nursery) -> None:
        for peer in self.asked:
            nursery.start_soon(self._dispatch, peer)
        while self.pending:
            reply = await self._inbox.receive()
            if reply.peer_id in self.pending:  # else: not asked, or answered already
                self.pending.discard(reply.peer_id)
                self._handle(reply, nursery)

    def record(self, own_answered: bool, truncated: tuple[int, ...]) -> LayerRecord:
        timed_out = [MissingProposer(p, "timed out") for p in sorted(self.pending)]
        origin = (self.context.origin,) if own_answered else ()
        return LayerRecord(
            layer=self.index,
            mode=self.layer.mode,
            asked=tuple(self.asked),
            answered=origin + tuple(self.proposals),
            missing=tuple(self.missing + timed_out),
            replacements=tuple(self.replacements),
            prompt_bytes=sum(len(turn.content.encode()) for turn in self._task.messages),
            truncated=truncated,
            elapsed_s=self.context.clock() - self.started,
        )

    def _handle(self, reply: Reply, nursery: trio.Nursery) -> None:
        message = reply.message
        if message is None or isinstance(message, Refusal):
            reason = reply.failure if message is None else f"refused: {message.reason}"
            self.missing.append(MissingProposer(reply.peer_id, reason))
            self._avoid.add(reply.peer_id)
            self._reroute(nursery)
            return
        self.proposals[reply.peer_id] = message.text
        self.calls.append(
            CallRecord(
                node=reply.peer_id,
                layer=self.index,
                role="proposer",
                queue_wait_s=message.queue_wait_s,
                service_s=message.service_s,
                prompt_tokens=message.prompt_tokens,
                completion_tokens=message.completion_tokens,
            )
        )
        self._on_proposal(reply.peer_id)

    def _reroute(self, nursery: trio.Nursery) -> None:
        if len(self.replacements) >= len(self.layer.proposers):
            return
        spare = [
            load.peer_id
            for load in self.context.peers()
            if load.peer_id not in self.asked and load.peer_id not in self._avoid
        ]
        if not spare:
            return
        peer = self.context.rng.choice(spare)
        self.asked.append(peer)
        self.replacements.append(peer)
        self.pending.add(peer)
        nursery.start_soon(self._dispatch, peer)

    async def _dispatch(self, peer: str) -> None:
        try:
            task = attrs.evolve(self._task, recipient=peer, seed=self._seed_for(peer))
            await self.context.send(peer, task)
        except PeerUnreachable as exc:
            await self.replies.send(Reply(peer, None, f"unreachable: {exc}"))
        else:
            self.sent.add(peer)

    def deliver(self, reply: Reply) -> None:
        """Hand a reply to the collecting loop without waiting.

        A reply after the layer closed has nowhere to go, and a peer that floods replies only
        loses its own: neither may block this node.
        """
        with contextlib.suppress(trio.WouldBlock):
            self.replies.send_nowait(reply)

    def notice_departures(self) -> None:
        """A proposer that left will never answer: count it as missing (and replace it).

        Only proposers whose task went out: one still being dialled is not connected yet.
        """
        for peer_id in sorted(self.pending & self.sent):
            if not self.context.reachable(peer_id):
                self.deliver(Reply(peer_id, None, "left during the layer"))
