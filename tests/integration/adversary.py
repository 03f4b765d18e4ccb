"""A hostile peer's toolkit for the adversary tests: raw py-libp2p peers, hand-built envelopes.

A raw peer is a bare `open_libp2p_overlay`: libp2p (the Noise channel authenticates it) and
nothing else, so it can send whatever bytes it likes, as records in shuffles or as direct
messages. The envelopes here are built from msgpack fields by hand, because the message
classes refuse to exist outside their bounds, and re-signed with the attacker's own key.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import msgpack
import pytest
import trio

from dmoa_p2p import testing
from dmoa_p2p.gossip import MOA_PROTOCOL
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import SHUFFLE_PROTOCOL, Node
from dmoa_p2p.overlay import Overlay, OverlayError, open_libp2p_overlay
from dmoa_p2p.testing import idle_presence
from dmoa_p2p.wire import (
    MAX_ENVELOPE_BYTES,
    ChatTurn,
    Envelope,
    Message,
    Presence,
    Proposal,
    Refusal,
    ShuffleFrame,
    Task,
    WireError,
    decode_envelope,
    decode_shuffle,
    encode_shuffle,
    seal,
)
from dmoa_p2p.wire.shuffle import MAX_SHUFFLE_BYTES

LOCALHOST = "/ip4/127.0.0.1/tcp/0"
# real nodes on 127.0.0.1 with the fake backend: 50 ms per prompt, peers checked twice a second
SWARM: dict[str, Any] = {
    "backend": "fake",
    "backend_options": {"service_time": "0.05"},
    "presence_interval_s": 0.5,
}
# what envelope signatures cover besides the fields (wire.codec's domain tag); `resign`
# checks that it still reproduces the codec's own signatures
SIGNING_DOMAIN = "dmoa-p2p/envelope"
# envelope fields: [version, kind, author, author_key, timestamp, nonce, body, signature]
BODY, SIGNATURE = 6, 7


async def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    await testing.wait_for(condition, timeout_s, poll_s=0.02)


# ---- envelopes --------------------------------------------------------------------------


def presence_of(identity: NodeIdentity, **changes: Any) -> Presence:
    return idle_presence(identity.peer_id, **changes)


def task_for(origin: NodeIdentity, recipient: str, query_id: str = "q-flood") -> Task:
    return Task(
        query_id=query_id,
        layer=1,
        origin=origin.peer_id,
        recipient=recipient,
        messages=(ChatTurn(role="user", content="fill your queue with my prompts"),),
        max_tokens=16,
        temperature=0.0,
        seed=1,
        deadline_s=30.0,
    )


def proposal_for(recipient: str) -> Proposal:
    return Proposal(
        query_id="q-wrong-channel",
        layer=1,
        origin=recipient,
        recipient=recipient,
        text="an answer nobody asked for",
        model="fake",
        queue_wait_s=0.0,
        service_s=0.1,
        prompt_tokens=1,
        completion_tokens=1,
    )


def refusal_for(recipient: str) -> Refusal:
    return Refusal(
        query_id="q-replay",
        layer=1,
        origin=recipient,
        recipient=recipient,
        reason="busy",
        retry_after_s=1.0,
    )


def fields_of(data: bytes) -> list[Any]:
    fields = msgpack.unpackb(data, raw=False)
    assert isinstance(fields, list) and len(fields) == 8
    return fields


def resign(fields: list[Any], identity: NodeIdentity) -> bytes:
    """The envelope bytes of `fields` with a fresh, valid signature by `identity`."""
    payload = msgpack.packb([SIGNING_DOMAIN, *fields[:SIGNATURE]], use_bin_type=True)
    signed = [*fields[:SIGNATURE], identity.sign(payload)]
    data = msgpack.packb(signed, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def check_resign_matches_the_codec(identity: NodeIdentity, now: float) -> None:
    """Ed25519 is deterministic: re-signing a sealed envelope must give the same bytes."""
    sealed = seal(presence_of(identity), identity, now)
    assert resign(fields_of(sealed), identity) == sealed


def out_of_bounds_presence(identity: NodeIdentity, now: float, **body: Any) -> bytes:
    """A presence signed by `identity` whose body says `body`, however absurd."""
    fields = fields_of(seal(presence_of(identity), identity, now))
    for key, value in body.items():
        assert key in fields[BODY], key
        fields[BODY][key] = value
    return resign(fields, identity)


def tampered(data: bytes, **body: Any) -> bytes:
    """`data` with its body changed and its signature kept."""
    fields = fields_of(data)
    fields[BODY].update(body)
    packed = msgpack.packb(fields, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def oversized_frame() -> bytes:
    return b"\x00" * (MAX_ENVELOPE_BYTES + 1)


# ---- raw peers --------------------------------------------------------------------------


class Replies:
    """A direct handler on MOA_PROTOCOL that collects what peers send back to a raw peer."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.undecodable = 0

    async def __call__(self, _sender: str, data: bytes) -> None:
        try:
            envelope: Envelope = decode_envelope(data)
        except WireError:
            self.undecodable += 1
        else:
            self.messages.append(envelope.body)
        await trio.lowlevel.checkpoint()

    def of_kind(self, kind: type[Message]) -> list[Message]:
        return [m for m in self.messages if isinstance(m, kind)]


@contextlib.asynccontextmanager
async def raw_peer(
    target: Node, identity: NodeIdentity | None = None, *, replies: Replies | None = None
) -> AsyncIterator[tuple[NodeIdentity, Overlay]]:
    """A bare libp2p peer connected to `target` only (no DHT: its lookups would connect it to
    the rest of the swarm). With `replies`, it accepts direct messages on MOA_PROTOCOL into it.
    """
    identity = identity or NodeIdentity.generate()
    async with open_libp2p_overlay(identity, [LOCALHOST], dht=False) as raw:
        if replies is not None:
            raw.set_handler(MOA_PROTOCOL, replies, max_bytes=MAX_ENVELOPE_BYTES)
        await raw.connect(target.listen_addrs[0])
        await wait_for(lambda: target.peer_id in raw.connected_peers())
        yield identity, raw


class ShuffleAnswers:
    """A raw peer's shuffle handler: the kinds of the frames each peer sent it."""

    def __init__(self) -> None:
        self.kinds: collections.defaultdict[str, collections.Counter[str]] = (
            collections.defaultdict(collections.Counter)
        )

    async def __call__(self, sender: str, data: bytes) -> None:
        with contextlib.suppress(WireError):
            self.kinds[sender][decode_shuffle(data).kind] += 1
        await trio.lowlevel.checkpoint()


async def offer_until_taken(
    raw: Overlay, me: NodeIdentity, to: Node, timeout_s: float = 45.0, **changes: Any
) -> None:
    """Offer `to` this peer's own record (a presence with `changes`), freshly signed, in a
    shuffle request once a round until `to` answers one with a reply: it merged the record.
    An offer it was busy for, or that was not acknowledged in time (a loaded machine), is
    made again, as a node's next round would. Strangers share half a round's answers, so
    with many at once on a loaded machine one may wait a while: hence the long bound."""
    answers = ShuffleAnswers()
    raw.set_handler(SHUFFLE_PROTOCOL, answers, max_bytes=MAX_SHUFFLE_BYTES)
    with trio.fail_after(timeout_s):
        while not answers.kinds[to.peer_id]["reply"]:
            sealed = seal(presence_of(me, **changes), me, to.wall_clock())
            frame = encode_shuffle(ShuffleFrame("request", ((sealed, 0),)))
            with contextlib.suppress(OverlayError):
                await raw.send(to.peer_id, SHUFFLE_PROTOCOL, frame, timeout_s=5.0)
            await trio.sleep(0.5)


async def offer_until_held(
    raw: Overlay, me: NodeIdentity, to: Node, held_by: Node, **changes: Any
) -> None:
    """Offer `to` this peer's own record (a presence with `changes`) until `held_by` (`to`,
    or a node `to` shuffles with) holds that record. As long a bound as `offer_until_taken`'s,
    for the same reason: on a loaded machine 15 s was once too short.

    The offers go on in the background while `held_by` is looked at every 20 ms: a record
    passed on is moved, so `held_by` may hold it for a round only. When it never does, the
    error says what each side did with the shuffles."""

    def held() -> bool:
        return any(
            r.peer_id == me.peer_id and all(getattr(r.presence, k) == v for k, v in changes.items())
            for r in held_by.sampling.held()
        )

    async def offer() -> None:
        while True:
            await offer_until_taken(raw, me, to, **changes)
            await trio.sleep(0.5)

    with trio.move_on_after(45) as waiting:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(offer)
            await wait_for(held, math.inf)
            nursery.cancel_scope.cancel()
    if waiting.cancelled_caught:
        # to tell a `to` that refused the offers from a record it did not pass on
        sides = {node.peer_id[-6:]: node.sampling.to_json() for node in (to, held_by)}
        refused = {node.peer_id[-6:]: refused_shuffles(node) for node in (to, held_by)}
        at_to = [r.presence for r in to.sampling.held() if r.peer_id == me.peer_id]
        raise AssertionError(
            f"record never held; `to` holds {at_to}; sampling {sides}; refused {refused}"
        )


# ---- what every attack must leave intact ------------------------------------------------


def rejections(node: Node) -> dict[str, int]:
    """Messages the node's wire gate rejected (MoA), by reason."""
    return {str(reason): n for reason, n in node.gate.rejections.items() if n}


def refused_records(node: Node) -> dict[str, int]:
    """Records in shuffles the node did not believe, by reason."""
    return {str(reason): n for reason, n in node.sampling.sampler.verifier.refused.items() if n}


def refused_shuffles(node: Node) -> dict[str, int]:
    """Shuffle frames the node did not take, by reason."""
    return {reason: n for reason, n in node.sampling.refused.items() if n}


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """No dmoa_p2p log record (captured at DEBUG) carries an exception or a traceback.

    py-libp2p's own records are left out: when a raw peer's overlay closes while one of its
    connections is still being added, py-libp2p itself logs the cancellation's traceback at
    WARNING ("[ADDCONN_FAIL] add_conn failed"), which says nothing about the nodes.
    """
    bad = [
        f"{r.name}:{r.levelname}: {r.getMessage()[:200]}"
        for r in caplog.records
        if r.name.startswith("dmoa_p2p")
        and (r.exc_info is not None or r.exc_text or "Traceback" in r.getMessage())
    ]
    assert not bad, bad


async def settled(count: Callable[[], int], quiet_s: float = 1.0, timeout_s: float = 15.0) -> int:
    """`count()` once it has not changed for `quiet_s`."""
    with trio.fail_after(timeout_s):
        last = count()
        while True:
            await trio.sleep(quiet_s)
            now = count()
            if now == last:
                return now
            last = now


def capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dmoa_p2p")


async def still_answers(asker: Node, proposer: Node, timeout_s: float = 20.0) -> None:
    """A real query at `asker` gets `proposer`'s proposal and the asker's own aggregation."""
    with trio.fail_after(timeout_s):
        answer = await asker.ask(QueryRequest("q", 1, 1))
    assert answer.text
    answered = {peer for layer in answer.trace.layers for peer in layer.answered}
    assert proposer.peer_id in answered, answer.trace
    assert any(
        call.role == "aggregator" and call.node == asker.peer_id for call in answer.trace.calls
    ), answer.trace


def members(nodes: Iterable[Node]) -> tuple[Node, Node]:
    """A (the bootstrap, which the attacker connects to) and B, connected to A only."""
    honest, behind = nodes
    return honest, behind
