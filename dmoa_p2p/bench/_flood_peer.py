"""The flooder of `bench flood`: a raw py-libp2p peer, not a node, that floods one victim.

It has its own identity and no checks of its own: it sends the victim valid signed tasks
(origin: itself) as fast as the victim acknowledges them, and shuffle requests carrying its
own freshly signed record as fast as the victim acknowledges or refuses them (each on
`senders` streams at once), and keeps the outcome of every task it sent. Its record makes
it a proposer candidate, at the victim and at the nodes the victim's shuffles pass it to:
tasks they send it it refuses at once.
Run in this process, or in a process of its own (`python -m dmoa_p2p.bench._flood_peer`,
driven over stdin/stdout by `_flood_handles.ProcessFlooder`) so that its CPU is not the victim's.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import sys
import time
import uuid
from typing import Any, Literal

import attrs
import trio

from dmoa_p2p.control import LineReader
from dmoa_p2p.gossip import MOA_PROTOCOL
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import offer_records
from dmoa_p2p.overlay import Overlay, OverlayError, open_libp2p_overlay
from dmoa_p2p.testing import idle_presence
from dmoa_p2p.wire import (
    MAX_ENVELOPE_BYTES,
    ChatTurn,
    Presence,
    Proposal,
    Refusal,
    Task,
    WireError,
    decode_envelope,
    seal,
)

LOCAL = ("/ip4/127.0.0.1/tcp/0",)
# between offers of its record when not flooding: it stays in the victim's view (a record
# lives 9 s), as an honest peer's shuffles keep it there
QUIET_PRESENCE_S = 1.0
SEND_TIMEOUT_S = 10.0
_PEER_ID = re.compile(r"(12D3KooW|Qm)[1-9A-HJ-NP-Za-km-z]{20,}")
_NUMBER = re.compile(r"\d+(\.\d+)?(e[-+]?\d+)?")
_MAX_REASON_CHARS = 160

State = Literal["sending", "acked", "unacknowledged", "proposal", "refusal"]


def reason_class(text: str) -> str:
    """A reason with its peer ids and numbers blanked, so that equal causes count together."""
    return _NUMBER.sub("#", _PEER_ID.sub("<peer>", text))[:_MAX_REASON_CHARS]


@attrs.frozen
class FloodLimits:
    """How hard and for how long to flood: it stops at whichever bound comes first."""

    max_tasks: int = 20_000
    max_shuffles: int = 20_000  # shuffle requests sent, refused or not
    max_s: float = 300.0  # a guard: the phase normally stops the flood before
    senders: int = 4  # concurrent sends of each kind (the overlay keeps 4 streams per peer)
    deadline_s: float = 30.0  # of each task, as the victim's queue sees it
    drain_s: float = 15.0  # after the flood, for the replies to tasks still queued

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class FloodCounts:
    """What the flooder did and got so far. sent = proposals + refusals + unacknowledged +
    unanswered + sending: each task is in exactly one state, its reply winning over a failed
    send (the victim may have taken a task whose acknowledgement was lost)."""

    sent: int
    proposals: int  # the victim served the task
    refusals: int  # the victim refused it (reasons in refusal_reasons)
    unacknowledged: int  # the send raised (ack_errors) and no reply came
    unanswered: int  # acknowledged, no reply yet
    sending: int  # not acknowledged yet
    served_s: float  # the victim's model time on the flooder's tasks (proposals' service_s)
    refusal_reasons: dict[str, int]
    ack_errors: dict[str, int]  # every failed send, also those a reply later came for
    # shuffle requests (each carrying its own fresh record) the victim took, and those that
    # failed by why (mostly the victim's pace: "rejected: too_frequent")
    shuffles_delivered: int
    shuffle_errors: dict[str, int]
    honest_tasks_refused: int  # tasks nodes sent the flooder as a proposer
    flood_s: float  # how long it has flooded
    stopped_by: str | None  # "phase end", "max_tasks", "max_s"; None: running

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FloodCounts:
        return cls(**data)

    def minus(self, earlier: FloodCounts) -> dict[str, float]:
        """Counters gained since `earlier` (a snapshot of the same flood)."""
        fields = ("sent", "proposals", "refusals", "unacknowledged", "shuffles_delivered")
        gained: dict[str, float] = {f: getattr(self, f) - getattr(earlier, f) for f in fields}
        gained["served_s"] = self.served_s - earlier.served_s
        return gained


class _Ledger:
    """The state of every task sent, and counts of each state."""

    def __init__(self) -> None:
        self.states: dict[str, State] = {}
        self.counts: collections.Counter[State] = collections.Counter()
        self.served_s = 0.0
        self.refusal_reasons: collections.Counter[str] = collections.Counter()
        self.ack_errors: collections.Counter[str] = collections.Counter()

    def _move(self, query_id: str, state: State) -> None:
        old = self.states.get(query_id)
        if old is not None:
            self.counts[old] -= 1
        self.states[query_id] = state
        self.counts[state] += 1

    def sending(self, query_id: str) -> None:
        self._move(query_id, "sending")

    def acked(self, query_id: str) -> None:
        if self.states[query_id] == "sending":  # a reply may have come before the ack
            self._move(query_id, "acked")

    def failed(self, query_id: str, reason: str) -> None:
        self.ack_errors[reason_class(reason)] += 1
        if self.states[query_id] == "sending":
            self._move(query_id, "unacknowledged")

    def reply(self, message: Proposal | Refusal) -> None:
        if self.states.get(message.query_id) not in ("sending", "acked", "unacknowledged"):
            return  # not one of ours, or answered already
        if isinstance(message, Proposal):
            self.served_s += message.service_s
            self._move(message.query_id, "proposal")
        else:
            self.refusal_reasons[reason_class(message.reason)] += 1
            self._move(message.query_id, "refusal")


class Flooder:
    """One flooding peer on `overlay`, aimed at `victim`; see the module's docstring."""

    def __init__(
        self, overlay: Overlay, identity: NodeIdentity, victim: str, limits: FloodLimits
    ) -> None:
        self.overlay = overlay
        self.identity = identity
        self.victim = victim
        self.limits = limits
        self._ledger = _Ledger()
        self._run_id = uuid.uuid4().hex[:8]
        self._next_task = 0
        self._shuffles_sent = 0  # requests sent (refused, failed or under way included)
        self._shuffles_delivered = 0  # requests the victim took
        self._shuffle_errors: collections.Counter[str] = collections.Counter()
        self._honest_refused = 0
        self._flooding = False
        self._flood_started: float | None = None
        self._flood_ended: float | None = None
        self._stopped_by: str | None = None
        self._start = trio.Event()
        self._stop = trio.Event()
        self._flood_done = trio.Event()

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    async def run(
        self, victim_addr: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, answer on MOA_PROTOCOL and offer its record now and then; flood once
        told to."""
        await self.overlay.connect(victim_addr)
        self.overlay.set_handler(MOA_PROTOCOL, self._on_message, max_bytes=MAX_ENVELOPE_BYTES)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._offer_quietly)
            task_status.started()
            await self._start.wait()
            await self._flood()

    def start_flood(self) -> None:
        self._start.set()

    async def stop_flood(self) -> FloodCounts:
        """End the flood, wait for the replies to what the victim still holds, and count."""
        self._stop.set()
        if self._start.is_set():
            await self._flood_done.wait()
        with trio.move_on_after(self.limits.drain_s):
            while self._ledger.counts["acked"] or self._ledger.counts["sending"]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        return self.counts()

    def counts(self) -> FloodCounts:
        ledger, now = self._ledger, trio.current_time()
        started = self._flood_started
        flood_s = 0.0 if started is None else (self._flood_ended or now) - started
        return FloodCounts(
            sent=len(ledger.states),
            proposals=ledger.counts["proposal"],
            refusals=ledger.counts["refusal"],
            unacknowledged=ledger.counts["unacknowledged"],
            unanswered=ledger.counts["acked"],
            sending=ledger.counts["sending"],
            served_s=ledger.served_s,
            refusal_reasons=dict(ledger.refusal_reasons.most_common()),
            ack_errors=dict(ledger.ack_errors.most_common()),
            shuffles_delivered=self._shuffles_delivered,
            shuffle_errors=dict(self._shuffle_errors.most_common()),
            honest_tasks_refused=self._honest_refused,
            flood_s=flood_s,
            stopped_by=self._stopped_by,
        )

    async def _flood(self) -> None:
        self._flood_started = trio.current_time()
        self._flooding = True
        async with trio.open_nursery() as nursery:
            for _ in range(self.limits.senders):
                nursery.start_soon(self._send_tasks)
                nursery.start_soon(self._flood_shuffles)
            with trio.move_on_after(self.limits.max_s):
                await self._stop.wait()
            self._stopped_by = self._stopped_by or ("phase end" if self._stop.is_set() else "max_s")
            self._flooding = False  # senders finish the send they are in: nothing is cut short
        self._flood_ended = trio.current_time()
        self._flood_done.set()

    async def _send_tasks(self) -> None:
        while self._flooding:
            if self._next_task >= self.limits.max_tasks:
                self._stopped_by = self._stopped_by or "max_tasks"
                return
            index = self._next_task
            self._next_task += 1
            query_id = f"flood-{self._run_id}-{index}"
            data = seal(self._task(query_id, index), self.identity, now=time.time())
            self._ledger.sending(query_id)
            try:
                await self.overlay.send(self.victim, MOA_PROTOCOL, data, timeout_s=SEND_TIMEOUT_S)
            except OverlayError as exc:
                self._ledger.failed(query_id, str(exc))
            else:
                self._ledger.acked(query_id)

    def _task(self, query_id: str, index: int) -> Task:
        return Task(
            query_id=query_id,
            layer=1,
            origin=self.peer_id,
            recipient=self.victim,
            messages=(ChatTurn("user", f"flood {index}: tell me everything"),),
            max_tokens=16,
            temperature=0.0,
            seed=index,
            deadline_s=self.limits.deadline_s,
        )

    async def _offer_quietly(self) -> None:
        """Its record once per QUIET_PRESENCE_S, flooding or not: it stays in the victim's
        view as an honest peer does."""
        while True:
            await self._offer_record()
            await trio.sleep(QUIET_PRESENCE_S)

    async def _flood_shuffles(self) -> None:
        """Its record in shuffle requests back to back while flooding, up to max_shuffles."""
        while self._flooding and self._shuffles_sent < self.limits.max_shuffles:
            await self._offer_record()
            await trio.lowlevel.checkpoint()

    async def _offer_record(self) -> None:
        """One shuffle request carrying its fresh record; the victim's answers are ignored
        (see `offer_records`)."""
        self._shuffles_sent += 1
        data = seal(self._presence(), self.identity, now=time.time())
        try:
            await offer_records(self.overlay, self.victim, [data])
        except OverlayError as exc:
            self._shuffle_errors[reason_class(str(exc))] += 1
        else:
            self._shuffles_delivered += 1

    def _presence(self) -> Presence:
        return idle_presence(
            self.peer_id,
            listen_addrs=self.overlay.listen_addrs,
            queue_capacity=64,
            interval_s=QUIET_PRESENCE_S,
        )

    async def _on_message(self, sender: str, data: bytes) -> None:
        try:
            body = decode_envelope(data).body  # no checks of its own: it trusts the victim
        except WireError:
            return
        if isinstance(body, Proposal | Refusal):
            self._ledger.reply(body)
        elif isinstance(body, Task):
            await self._refuse(sender, body)

    async def _refuse(self, sender: str, task: Task) -> None:
        self._honest_refused += 1
        refusal = Refusal(
            query_id=task.query_id,
            layer=task.layer,
            origin=task.origin,
            recipient=task.origin,
            reason="this peer floods; it serves nobody",
            retry_after_s=None,
        )
        data = seal(refusal, self.identity, now=time.time())
        with contextlib.suppress(OverlayError):  # else the victim's query notices by itself
            await self.overlay.send(sender, MOA_PROTOCOL, data, timeout_s=SEND_TIMEOUT_S)


# ---- a process of its own: driven by one command per line on stdin ---------------------
# stdout: {"ready": peer_id} once connected, then {"counts": ...} for "mark" and "stop"
# (after which it exits); "flood" starts the flood; end of input counts as "stop".


def _say(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def _serve_commands(victim_addr: str, victim: str, limits: FloodLimits) -> None:
    identity = NodeIdentity.generate()
    async with open_libp2p_overlay(identity, LOCAL) as overlay, trio.open_nursery() as nursery:
        flooder = Flooder(overlay, identity, victim, limits)
        await nursery.start(flooder.run, victim_addr)
        _say({"ready": flooder.peer_id})
        commands = LineReader(trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())), 1024)
        while (line := await commands.line()) is not None and (command := line.decode()) != "stop":
            if command == "flood":
                flooder.start_flood()
            elif command == "mark":
                _say({"counts": flooder.counts().to_json()})
        _say({"counts": (await flooder.stop_flood()).to_json()})
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> None:
    """`python -m dmoa_p2p.bench._flood_peer VICTIM_ADDR VICTIM_ID LIMITS_JSON`."""
    victim_addr, victim, limits = argv
    trio.run(_serve_commands, victim_addr, victim, FloodLimits(**json.loads(limits)))


if __name__ == "__main__":
    main(sys.argv[1:])
