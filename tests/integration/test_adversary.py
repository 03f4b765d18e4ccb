"""A hostile peer against real py-libp2p nodes on 127.0.0.1: attacker → honest A → B behind it.

The attacker is a bare libp2p overlay (or hundreds of them) connected to A only, so "not
passed on" is checked at B. Every attack must be refused by a named counter, must not reach
B, must not put a traceback in any log, and must leave A answering real queries with B's
proposals.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from dmoa_p2p.gossip import MOA_PROTOCOL
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import SHUFFLE_PROTOCOL, Node, offer_records
from dmoa_p2p.node._neighbours import FRAMES_PER_ROUND
from dmoa_p2p.overlay import Overlay, OverlayError, open_libp2p_overlay
from dmoa_p2p.swarm import open_inprocess_swarm
from dmoa_p2p.wire import Proposal, Refusal, RejectReason, seal
from tests.integration.adversary import (
    LOCALHOST,
    SWARM,
    Replies,
    capture_logs,
    check_resign_matches_the_codec,
    members,
    no_tracebacks,
    offer_until_held,
    offer_until_taken,
    out_of_bounds_presence,
    oversized_frame,
    presence_of,
    proposal_for,
    raw_peer,
    refusal_for,
    refused_records,
    refused_shuffles,
    rejections,
    settled,
    still_answers,
    tampered,
    task_for,
    wait_for,
)

pytestmark = pytest.mark.integration


def candidates(node: Node) -> set[str]:
    """Whom `node` would ask for proposals now."""
    return {load.peer_id for load in node.engine.layer_context.peers()}


def only_each_other(a: Node, b: Node) -> bool:
    """Whether A and B would ask only each other: no record of anyone else left in either
    view. Not A's alone: a record A shuffled to B comes back to A until its TTL is over (seen
    in CI: A's candidates were B alone for a moment, then two made-up peers again)."""
    return candidates(a) == {b.peer_id} and candidates(b) == {a.peer_id}


def records_of(node: Node, peer_id: str) -> list[Any]:
    return [r for r in node.sampling.held() if r.peer_id == peer_id]


async def reaches_behind(raw: Overlay, me: NodeIdentity, honest: Node, behind: Node) -> None:
    """Offer A a valid, marked record after the attack and wait until B holds it: A's
    shuffles carry this peer's records to B, so whatever B did not get was not passed on."""
    await offer_until_held(raw, me, honest, behind, queue_capacity=7)


def untouched(behind: Node) -> None:
    """B, behind A, refused nothing of the attacker's: none of it was passed on."""
    assert refused_records(behind) == {} and rejections(behind) == {}


# ---- 1. absurd but finite figures -------------------------------------------------------

ABSURD: list[dict[str, Any]] = [
    {"arrival_rate": 1e308},
    {"mean_service_s": 1e308},
    {"interval_s": 1e9},
    {"arrival_rate": 1e308, "mean_service_s": 1e308, "interval_s": 1e9},
    {"service_var_s2": 1e308, "admitted_rate": 1e308},
    {"queue_length": 2**62, "queue_capacity": 2**62, "service_samples": 2**62},
]


async def test_absurd_record_figures_are_malformed_and_status_still_renders(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, http="127.0.0.1:0", **SWARM) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        async with raw_peer(honest) as (me, raw):
            now = honest.wall_clock()
            check_resign_matches_the_codec(me, now)  # the signatures below are genuine
            absurd = [out_of_bounds_presence(me, now, **body) for body in ABSURD]
            await offer_records(raw, honest.peer_id, absurd)  # one shuffle of L records
            await wait_for(lambda: refused_records(honest) == {"malformed": len(ABSURD)})
            async with httpx.AsyncClient() as http:
                for app in swarm.apps:
                    for path in ("/status", "/metrics", "/"):
                        response = await http.get(app.http_urls[0] + path)
                        assert response.status_code == 200, (path, response.text[:300])
                status = (await http.get(swarm.apps[0].http_urls[0] + "/status")).json()
            assert status["refusals"]["record_malformed"] == len(ABSURD)
            assert me.peer_id not in {p["peer_id"] for p in status["peers"]}
            await reaches_behind(raw, me, honest, behind)
            untouched(behind)
        await still_answers(honest, behind)
    no_tracebacks(caplog)


# ---- 2. hundreds of made-up identities --------------------------------------------------

IDENTITIES = 100
AT_ONCE = 6  # raw peers alive together


class DialCounter:
    """A 127.0.0.1 port where nothing speaks libp2p: each TCP connection is counted, closed."""

    def __init__(self) -> None:
        self.connections: list[float] = []
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections.append(trio.current_time())
        await stream.aclose()


async def made_up_peer(honest: Node, listen_addrs: tuple[str, ...]) -> None:
    """One made-up identity: connect to A, offer it a genuine record naming `listen_addrs`
    until A takes it, leave."""
    async with raw_peer(honest) as (identity, raw):
        await offer_until_taken(raw, identity, honest, listen_addrs=listen_addrs)


async def run_identities(
    honest: Node, count: int, addrs: Callable[[int], tuple[str, ...]]
) -> tuple[float, list[str]]:
    """`count` made-up identities, `AT_ONCE` at a time; the seconds it took and, for each
    that could not even connect to A, why."""
    started = trio.current_time()
    limiter = trio.CapacityLimiter(AT_ONCE)
    locked_out: list[str] = []

    async def one(i: int) -> None:
        async with limiter:
            try:
                await made_up_peer(honest, addrs(i))
            except OverlayError as exc:
                locked_out.append(f"identity {i}: {exc}")

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return trio.current_time() - started, locked_out


def bounded_views(node: Node) -> None:
    """Whatever the identities' number: a view of C entries, and a sample stream as long."""
    capacity = node.sampling.sampler.config.capacity
    assert len(node.sampling.sampler.view.entries) <= capacity
    assert len(node.sampling.held()) <= 2 * capacity


async def test_made_up_identities_leave_bounded_views_expire_and_cost_one_dial_per_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm, trio.open_nursery() as n:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        port = DialCounter()
        await n.start(port.serve)
        # all claim one address of the attacker's choosing
        victim = f"/ip4/127.0.0.1/tcp/{port.port}/p2p/{NodeIdentity.generate().peer_id}"
        elapsed, locked_out = await run_identities(honest, IDENTITIES, lambda _i: (victim,))
        assert locked_out == []
        assert elapsed < 60, f"{IDENTITIES} identities took {elapsed:.0f} s"
        kept = len(honest.snapshot().peers)
        for node in (honest, behind):
            bounded_views(node)
        # B had their records from A's shuffles and dialled them: one address, once
        refused = behind.snapshot().refusals
        assert refused.get("dial_address_recently_dialled", 0) >= 1, refused
        # the made-up peers sign no record once gone: within a TTL only the real one is
        # a proposer candidate
        ttl = honest.sampling.sampler.config.ttl_s
        await wait_for(lambda: only_each_other(honest, behind), ttl + 5)
        await still_answers(honest, behind)
        await still_answers(behind, honest)
        # the address was dialled once by each node at most (py-libp2p tries a dial up to
        # 4 times)
        assert 1 <= len(port.connections) <= 2 * 4, port.connections
        assert rejections(honest) == rejections(behind) == {}
        # every record was genuine; A and B pass them on until they expire, and one may
        # expire on its way
        for node in (honest, behind):
            assert set(refused_records(node)) <= {"stale"}, refused_records(node)
        n.cancel_scope.cancel()
    no_tracebacks(caplog)
    print(
        f"{IDENTITIES} made-up identities in {elapsed:.1f} s; A kept {kept} peers in its "
        f"view; B refused {refused}"
    )


SYBILS = 300


async def test_hundreds_of_identities_that_connect_and_leave_do_not_lock_newcomers_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """py-libp2p 0.8.1 keeps an inbound slot per connection ever accepted (250 in all); the
    overlay works around it (`overlay/_libp2p_host.py`, `unleak_inbound_slots`)."""
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        _, locked_out = await run_identities(honest, SYBILS, lambda _i: ())
        assert len(honest.overlay.connected_peers()) == 1  # every made-up peer left
        # and their records expire (proposers drawn among them meanwhile are unreachable)
        ttl = honest.sampling.sampler.config.ttl_s
        await wait_for(lambda: only_each_other(honest, behind), ttl + 5)
        newcomer: str | None = None
        async with open_libp2p_overlay(NodeIdentity.generate(), [LOCALHOST]) as late:
            try:
                await late.connect(honest.listen_addrs[0])
            except OverlayError as exc:
                newcomer = str(exc)
        await still_answers(honest, behind)  # the connections A had before are fine
    no_tracebacks(caplog)
    assert (locked_out[:1], newcomer) == ([], None), f"{len(locked_out)} of {SYBILS} locked out"


async def test_one_host_port_behind_many_peer_ids_is_dialled_at_most_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm, trio.open_nursery() as n:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        port = DialCounter()
        await n.start(port.serve)
        # each made-up identity names the same host:port under a peer id of its own
        target = f"/ip4/127.0.0.1/tcp/{port.port}/p2p/"
        _, locked_out = await run_identities(
            honest, 20, lambda _i: (target + NodeIdentity.generate().peer_id,)
        )
        assert locked_out == []
        await trio.sleep(3)  # the dials run in the background; 3 s is well within a minute
        refused = {node.peer_id[-6:]: node.snapshot().refusals for node in (honest, behind)}
        n.cancel_scope.cancel()
    no_tracebacks(caplog)
    # A and B each dial that host:port once a minute at most, each dial at most 4 TCP
    # connections (libp2p's retries)
    assert len(port.connections) <= 2 * 4, (
        f"{len(port.connections)} TCP connections to 127.0.0.1:{port.port} in "
        f"{port.connections[-1] - port.connections[0]:.1f} s; refused {refused}"
    )


# ---- 3, 4, 7: records in shuffles -------------------------------------------------------


async def test_moa_messages_offered_as_records_are_the_wrong_channel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        async with raw_peer(honest) as (me, raw):
            now = honest.wall_clock()
            messages = (
                proposal_for(honest.peer_id),
                task_for(me, honest.peer_id),
                refusal_for(honest.peer_id),
            )
            await offer_records(raw, honest.peer_id, [seal(m, me, now) for m in messages])
            await wait_for(lambda: refused_records(honest) == {"wrong_channel": 3})
            await reaches_behind(raw, me, honest, behind)
            untouched(behind)
            assert rejections(honest) == {}  # no MoA message reached the wire gate
            assert honest.queue.served == behind.queue.served == 0  # no task ran
        await still_answers(honest, behind)
    no_tracebacks(caplog)


async def test_own_record_tampered_is_a_bad_signature_and_not_passed_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        async with raw_peer(honest) as (me, raw):
            genuine = seal(presence_of(me), me, honest.wall_clock())
            # the stream authenticates the sender as the author; the record's own signature
            # no longer holds
            await offer_records(raw, honest.peer_id, [tampered(genuine, queue_capacity=99)])
            await wait_for(lambda: refused_records(honest) == {"bad_signature": 1})
            assert records_of(honest, me.peer_id) == []
            await reaches_behind(raw, me, honest, behind)
            untouched(behind)
            assert [r.presence.queue_capacity for r in records_of(behind, me.peer_id)] == [7]
        await still_answers(honest, behind)
    no_tracebacks(caplog)


async def test_a_record_claiming_another_peer_id_is_a_key_mismatch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        async with raw_peer(honest) as (me, raw):
            now = honest.wall_clock()
            # B's record, saying B is full, signed with the attacker's key
            lie = presence_of(behind.identity, queue_length=1, queue_capacity=1)
            await offer_records(raw, honest.peer_id, [seal(lie, me, now)])
            await wait_for(lambda: refused_records(honest) == {"key_mismatch": 1})
            await reaches_behind(raw, me, honest, behind)
            untouched(behind)
            seen = {p.load.peer_id: p.load for p in honest.snapshot().peers}
            assert seen[behind.peer_id].queue_capacity == behind.queue.capacity
        await still_answers(honest, behind)
    no_tracebacks(caplog)


GARBAGE = 1000
SENDERS = 4  # concurrent sends: a peer gets at most 4 streams per protocol anyway


async def test_a_flood_of_garbage_shuffles_is_paced_counted_and_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        dice = random.Random(7)
        junk = [
            dice.randbytes(dice.randrange(1, 200)) if i % 2 else b"\xc1" + i.to_bytes(4, "big")
            for i in range(GARBAGE)  # random bytes, or never valid msgpack
        ]
        too_frequent = [0]
        async with raw_peer(honest) as (_me, raw):

            async def sender(start: int) -> None:
                for data in junk[start::SENDERS]:
                    try:
                        await raw.send(honest.peer_id, SHUFFLE_PROTOCOL, data)
                    except OverlayError as exc:
                        assert "rejected: too_frequent" in str(exc), exc
                        too_frequent[0] += 1

            started = trio.current_time()
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for start in range(SENDERS):
                        nursery.start_soon(sender, start)
            flood_s = trio.current_time() - started
            # every frame is counted: refused unread over the pace, else by why it is no
            # shuffle; none reaches a record's signature check
            counted = await settled(lambda: sum(honest.sampling.refused.values()))
            assert counted == GARBAGE
            refused = refused_shuffles(honest)
            assert refused["too_frequent"] == too_frequent[0]
            read = GARBAGE - too_frequent[0]
            assert 0 < read <= FRAMES_PER_ROUND * (int(flood_s / 0.5) + 2), (read, flood_s)
            # nothing of the flood reaches B; a request of A's may find B's answers spent (a
            # round of B's stretched by a loaded machine holds two of A's)
            assert refused_records(honest) == {}
            assert set(refused_shuffles(behind)) <= {"over_answer_budget"}
            untouched(behind)
            await still_answers(honest, behind)
        print(f"garbage flood: {GARBAGE} frames in {flood_s:.1f} s, {read} read: {refused}")
    no_tracebacks(caplog)


# ---- 5, 6, 7: the direct stream ---------------------------------------------------------

FLOOD = 300


async def test_a_task_flood_leaves_the_node_its_own_query_and_is_refused_beyond_its_share(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        replies = Replies()
        async with raw_peer(honest, replies=replies) as (me, raw):
            sent = [0]
            failures: list[str] = []

            async def sender(start: int) -> None:
                for i in range(start, FLOOD, SENDERS):
                    task = task_for(me, honest.peer_id, query_id=f"flood-{i}")
                    try:
                        await raw.send(honest.peer_id, MOA_PROTOCOL, seal(task, me, now()))
                    except OverlayError as exc:
                        failures.append(str(exc))
                    sent[0] += 1

            def now() -> float:
                return honest.wall_clock()

            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for start in range(SENDERS):
                    nursery.start_soon(sender, start)
                await wait_for(lambda: sent[0] >= FLOOD // 4)
                with trio.fail_after(20):
                    answer = await honest.ask(QueryRequest("q", 1, 1))
            flood_s = trio.current_time() - started
            # beyond its fair rate a task is rejected before its signature is checked, and
            # the flooder is told why in the acknowledgement
            over_rate = [f for f in failures if "over_fair_rate: peer" in f]
            assert over_rate == failures and len(over_rate) > FLOOD // 2, failures[:3]
            assert honest.gate.rejections[RejectReason.OVER_FAIR_RATE] == len(over_rate)
            # A's user got A's own proposal, B's, and A's aggregation
            assert answer.text
            own = [(c.role, c.layer) for c in answer.trace.calls if c.node == honest.peer_id]
            assert ("proposer", 1) in own and ("aggregator", 2) in own, answer.trace
            assert behind.peer_id in answer.trace.layers[0].answered, answer.trace
            # every acknowledged task was answered: served, or refused with a reason
            accepted = FLOOD - len(over_rate)
            await wait_for(lambda: len(replies.messages) == accepted, 60)
            refusals = replies.of_kind(Refusal)
            proposals = replies.of_kind(Proposal)
            causes = dict(honest.engine.task_refusals)
            assert len(refusals) == sum(causes.values()), causes
            assert len(proposals) + len(refusals) == accepted and replies.undecodable == 0
            assert rejections(honest) == {"over_fair_rate": len(over_rate)}
            assert rejections(behind) == {}
            assert behind.queue.served <= 2  # B served A's users, never the flood
        await still_answers(honest, behind)
    no_tracebacks(caplog)
    print(
        f"task flood: {FLOOD} sent in {flood_s:.1f} s, {len(over_rate)} over the fair rate, "
        f"{len(proposals)} served, refused {causes}"
    )


async def test_tasks_from_a_skewed_clock_are_refused_as_future_or_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        async with raw_peer(honest) as (me, raw):
            task = task_for(me, honest.peer_id)
            ahead = seal(task, me, honest.wall_clock() + 45)
            with pytest.raises(OverlayError, match="rejected: future"):
                await raw.send(honest.peer_id, MOA_PROTOCOL, ahead)
            behind_by = seal(task, me, honest.wall_clock() - 45)
            with pytest.raises(OverlayError, match="rejected: stale"):
                await raw.send(honest.peer_id, MOA_PROTOCOL, behind_by)
            assert rejections(honest) == {"future": 1, "stale": 1}
            assert honest.snapshot().refusals["direct_rejected"] == 2
            assert rejections(behind) == {} and honest.queue.served == 0
        await still_answers(honest, behind)
    no_tracebacks(caplog)


async def test_garbage_oversized_and_replayed_direct_messages_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    async with open_inprocess_swarm(2, tmp_path, **SWARM) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = members(swarm.nodes)
        async with raw_peer(honest) as (me, raw):
            with pytest.raises(OverlayError, match="rejected: malformed"):
                await raw.send(honest.peer_id, MOA_PROTOCOL, b"\xc1junk")
            with pytest.raises(OverlayError, match="larger than the receiver's limit"):
                await raw.send(honest.peer_id, MOA_PROTOCOL, oversized_frame())
            assert honest.snapshot().refusals["direct_too_large"] == 1
            once = seal(refusal_for(honest.peer_id), me, honest.wall_clock())
            await raw.send(honest.peer_id, MOA_PROTOCOL, once)  # accepted (and ignored)
            with pytest.raises(OverlayError, match="rejected: replay"):
                await raw.send(honest.peer_id, MOA_PROTOCOL, once)
            assert rejections(honest) == {"malformed": 1, "replay": 1}
            refused = honest.snapshot().refusals
            assert (refused["direct_too_large"], refused["direct_rejected"]) == (1, 2)
            assert rejections(behind) == {}
            assert sum(behind.snapshot().refusals.values()) == 0
        await still_answers(honest, behind)
    no_tracebacks(caplog)

