"""Hostile peers on the in-memory overlay: shuffles paced and budgeted, records capped per
IP, bounded dialling, identity collisions, clock skew told to the sender."""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.config import ConfigError
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import SHUFFLE_PROTOCOL, Node, offer_records
from dmoa_p2p.node._dialer import DialBudget, PeerDialer
from dmoa_p2p.node._lock import data_dir_lock
from dmoa_p2p.node._neighbours import FRAMES_PER_ROUND
from dmoa_p2p.overlay import MemoryNetwork, Overlay, OverlayError
from dmoa_p2p.testing import idle_presence, memory_node, memory_swarm, wait_for, wall_clock
from dmoa_p2p.wire import ShuffleFrame, ShuffleKind, decode_shuffle, encode_shuffle, seal
from dmoa_p2p.wire.shuffle import MAX_SHUFFLE_BYTES

RELAY = "/ip4/198.51.100.10/tcp/4001/p2p/RELAY/p2p-circuit/p2p/"
CROWD = 12  # keys on one host: more than a view takes per IP (8)


def listening_at(peer_id: str, ip: str = "127.0.0.1") -> tuple[str, ...]:
    return (f"/ip4/{ip}/tcp/4001/p2p/{peer_id}",)


def record(identity: NodeIdentity, addrs: tuple[str, ...] | None = None) -> bytes:
    """`identity`'s own record, signed now: genuine, whatever it claims."""
    claimed = listening_at(identity.peer_id) if addrs is None else addrs
    presence = idle_presence(identity.peer_id, listen_addrs=claimed, models=("m",))
    return seal(presence, identity, wall_clock())


async def offered(overlay: Overlay, node: Node, sealed: bytes) -> str:
    """Offer `node` one record: "accepted", or why the node's screen rejected the frame."""
    try:
        await offer_records(overlay, node.peer_id, [sealed])
    except OverlayError as exc:
        return str(exc).rsplit("rejected: ", 1)[-1]
    return "accepted"


async def at_once(overlay: Overlay, node: Node, records: list[bytes]) -> Counter[str]:
    """One frame per record, all sent at the same instant (so within one round): outcomes."""
    outcomes: Counter[str] = Counter()

    async def one(sealed: bytes) -> None:
        outcomes[await offered(overlay, node, sealed)] += 1

    async with trio.open_nursery() as nursery:
        for sealed in records:
            nursery.start_soon(one, sealed)
    return outcomes


class Answers:
    """A raw peer's shuffle handler that keeps the kind of every frame sent to it."""

    def __init__(self) -> None:
        self.kinds: Counter[ShuffleKind] = Counter()

    async def __call__(self, _sender: str, data: bytes) -> None:
        self.kinds[decode_shuffle(data).kind] += 1
        await trio.lowlevel.checkpoint()


# ---- records: capped per IP ------------------------------------------------------------


async def offer_crowd(network: MemoryNetwork, node: Node, *, behind_relay: bool) -> set[str]:
    """CROWD keys of one host, on one IP or behind one relay, hand `node` their records and
    leave; their peer ids."""
    keys = [NodeIdentity.generate() for _ in range(CROWD)]
    sealed = [
        record(k, (RELAY + k.peer_id,) if behind_relay else listening_at(k.peer_id, "192.0.2.7"))
        for k in keys
    ]
    length = node.sampling.sampler.config.shuffle_length
    for start in range(0, CROWD, length):  # a request is read up to L records
        # each part from a stranger of its own that leaves at once: a stranger's request is
        # answered with copies (a neighbour's with the records themselves, see
        # PartialView.answer), so the view keeps what it held
        async with network.open_overlay(NodeIdentity.generate()) as host:
            await host.connect(node.listen_addrs[0])
            await offer_records(host, node.peer_id, sealed[start : start + length])
            await trio.sleep(0.05)
    await trio.sleep(1)
    return {k.peer_id for k in keys}


async def test_a_view_takes_at_most_eight_records_claiming_one_ip(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    async with memory_node(network, tmp_path) as node:
        crowd = await offer_crowd(network, node, behind_relay=False)
        held = set(node.sampling.sampler.view.peer_ids()) & crowd
        assert len(held) == node.sampling.sampler.config.max_per_ip == 8


async def test_peers_behind_one_relay_are_not_taken_for_one_host(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    async with memory_node(network, tmp_path) as node:
        crowd = await offer_crowd(network, node, behind_relay=True)
        assert crowd <= set(node.sampling.sampler.view.peer_ids())


async def test_proposer_candidates_hold_at_most_eight_records_claiming_one_ip(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    async with memory_node(network, tmp_path) as node:
        crowd = await offer_crowd(network, node, behind_relay=False)
        assert len(node.live_peer_ids() & crowd) <= node.sampling.sampler.config.max_per_ip


# ---- shuffles: paced per sender, budgeted per round ------------------------------------


async def test_shuffle_frames_beyond_four_a_round_are_refused_unread(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    async with (
        memory_node(network, tmp_path) as node,
        network.open_overlay(NodeIdentity.generate()) as raw,
    ):
        await raw.connect(node.listen_addrs[0])
        verifier = node.sampling.sampler.verifier
        checks = verifier.signature_checks
        # ten records of ten keys, each a frame of its own: each would cost a signature check
        outcomes = await at_once(raw, node, [record(NodeIdentity.generate()) for _ in range(10)])
        assert outcomes == {"accepted": FRAMES_PER_ROUND, "too_frequent": 10 - FRAMES_PER_ROUND}
        await trio.sleep(0.1)  # the accepted ones are handled
        # of the frames taken, one request a round is read and answered, the rest told busy
        busy = FRAMES_PER_ROUND - 1
        assert node.sampling.refused == {
            "too_frequent": 10 - FRAMES_PER_ROUND,
            "over_answer_budget": busy,
        }
        refusals = node.snapshot().refusals
        refused = 10 - FRAMES_PER_ROUND
        assert refusals["shuffle_too_frequent"] == refusals["direct_rejected"] == refused
        assert verifier.signature_checks - checks == 1
        assert len(node.live_peer_ids()) == 1


async def test_a_shuffle_flooder_gets_four_frames_a_round_and_is_heard_again_after(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    flooder = NodeIdentity.generate()
    async with memory_node(network, tmp_path) as node, network.open_overlay(flooder) as raw:
        await raw.connect(node.listen_addrs[0])
        config = node.sampling.sampler.config
        outcomes: Counter[str] = Counter()
        started = trio.current_time()
        for _ in range(200):  # its own record, freshly signed, as fast as it is acknowledged
            outcomes[await offered(raw, node, record(flooder))] += 1
        # rounds the offers spanned: a span of t seconds touches at most t / round_s + 2 of
        # the service's rounds, which start at a random phase
        rounds = int((trio.current_time() - started) / config.round_s) + 2
        assert set(outcomes) == {"accepted", "too_frequent"}
        assert outcomes["accepted"] <= FRAMES_PER_ROUND * rounds < outcomes["too_frequent"]
        refused = node.sampling.refused
        assert refused["too_frequent"] == outcomes["too_frequent"]
        # of those taken, one a round is read: at most one signature check a round
        assert refused["over_answer_budget"] >= outcomes["accepted"] - rounds
        assert node.sampling.sampler.verifier.signature_checks <= rounds
        # no lasting block: once its record expired, its next shuffle is heard
        await trio.sleep(config.ttl_s)
        assert flooder.peer_id not in node.live_peer_ids()
        assert await offered(raw, node, record(flooder)) == "accepted"
        await wait_for(lambda: flooder.peer_id in node.live_peer_ids())


async def test_copies_of_a_peers_record_sent_by_another_never_cost_it_its_own_shuffles(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A framer sends an honest peer's genuine record in 20 frames at once: the pace is the
    sender's, not the record's author's, so the honest peer's own shuffle at that instant
    goes through; the copies cost one signature check."""
    network = MemoryNetwork(latency_s=0.005)
    honest, framer = NodeIdentity.generate(), NodeIdentity.generate()
    async with (
        memory_node(network, tmp_path) as node,
        network.open_overlay(framer) as raw,
        network.open_overlay(honest) as own,
    ):
        await raw.connect(node.listen_addrs[0])
        await own.connect(node.listen_addrs[0])
        genuine = record(honest)
        framed: Counter[str] = Counter()
        honest_frame: list[str] = []

        async def copy() -> None:
            framed[await offered(raw, node, genuine)] += 1

        async def its_own() -> None:
            honest_frame.append(await offered(own, node, record(honest)))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(copy)
            nursery.start_soon(its_own)
        assert framed == {"accepted": FRAMES_PER_ROUND, "too_frequent": 20 - FRAMES_PER_ROUND}
        assert honest_frame == ["accepted"]
        assert node.sampling.refused["too_frequent"] == 20 - FRAMES_PER_ROUND
        await wait_for(lambda: honest.peer_id in node.live_peer_ids())
        assert node.sampling.sampler.verifier.signature_checks == 2  # the copy, and its own


async def test_one_neighbour_cannot_take_a_rounds_whole_answer_budget(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    greedy, honest = NodeIdentity.generate(), NodeIdentity.generate()
    async with (
        memory_node(network, tmp_path) as node,
        network.open_overlay(greedy) as raw,
        network.open_overlay(honest) as own,
    ):
        answers = Answers()
        own.set_handler(SHUFFLE_PROTOCOL, answers, max_bytes=MAX_SHUFFLE_BYTES)
        await raw.connect(node.listen_addrs[0])
        await own.connect(node.listen_addrs[0])
        # four requests of its own in one round: as many frames as its pace allows
        greedy_records = [record(greedy) for _ in range(FRAMES_PER_ROUND)]
        assert await at_once(raw, node, greedy_records) == {"accepted": FRAMES_PER_ROUND}
        # an honest peer's one request of the round, just after
        frame = ShuffleFrame("request", ((record(honest), 0),))
        await own.send(node.peer_id, SHUFFLE_PROTOCOL, encode_shuffle(frame))
        await trio.sleep(0.05)
        assert answers.kinds["reply"] == 1 and answers.kinds["busy"] == 0


async def requests_at_once(
    network: MemoryNetwork,
    node: Node,
    senders: int,
    records_of: Callable[[NodeIdentity], list[bytes]],
) -> tuple[Counter[ShuffleKind], set[str], int]:
    """A shuffle request from each of `senders` raw peers, carrying `records_of` its identity,
    all sent at one instant: the kinds of the frames the node sent them, their ids, and how
    many of them the node had chosen as shuffle partners by the time the requests arrived
    (those are no strangers: its rounds run at a random phase while the peers connect)."""
    answers = Answers()
    async with contextlib.AsyncExitStack() as stack:
        frames = []
        for _ in range(senders):
            me = NodeIdentity.generate()
            raw = await stack.enter_async_context(network.open_overlay(me))
            raw.set_handler(SHUFFLE_PROTOCOL, answers, max_bytes=MAX_SHUFFLE_BYTES)
            await raw.connect(node.listen_addrs[0])
            entries = tuple((sealed, 0) for sealed in records_of(me))
            frames.append((raw, encode_shuffle(ShuffleFrame("request", entries))))
        arrived = trio.current_time() + network.latency_s
        async with trio.open_nursery() as nursery:
            for raw, frame in frames:
                nursery.start_soon(raw.send, node.peer_id, SHUFFLE_PROTOCOL, frame)
        await trio.sleep(0.1)  # the answers come back
        chosen = node.sampling.neighbours._last_shuffled
        partners = sum(chosen.get(raw.peer_id, math.inf) <= arrived for raw, _ in frames)
        return answers.kinds, {raw.peer_id for raw, _ in frames}, partners


async def test_requests_beyond_the_answer_budget_are_told_busy_and_not_merged(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    async with memory_node(network, tmp_path) as node:
        # strangers (peers it never shuffled with) get half of the round's answers
        budget = node.sampling.sampler.config.max_answers_per_round // 2
        extra = 2 * budget
        kinds, senders, partners = await requests_at_once(
            network, node, budget + extra, lambda me: [record(me)]
        )
        answered, refused = budget + partners, extra - partners
        assert (kinds["reply"], kinds["busy"]) == (answered, refused)
        assert node.sampling.refused == {"over_answer_budget": refused}
        assert node.snapshot().refusals["shuffle_over_answer_budget"] == refused
        assert len(node.live_peer_ids() & senders) == answered


async def test_a_request_over_the_answer_budget_costs_no_signature_check(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    async with memory_node(network, tmp_path) as node:
        config = node.sampling.sampler.config
        # senders it never shuffled with get half the round's answers
        length, budget = config.shuffle_length, config.max_answers_per_round // 2

        def records_of(me: NodeIdentity) -> list[bytes]:  # its own and L - 1 others
            return [record(me)] + [record(NodeIdentity.generate()) for _ in range(length - 1)]

        kinds, _, partners = await requests_at_once(network, node, budget + 4, records_of)
        assert kinds["busy"] == 4 - partners
        assert node.sampling.sampler.verifier.signature_checks == (budget + partners) * length


async def test_a_reply_nobody_asked_for_is_refused_and_its_records_not_believed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    me, other = NodeIdentity.generate(), NodeIdentity.generate()
    async with memory_node(network, tmp_path) as node, network.open_overlay(me) as raw:
        await raw.connect(node.listen_addrs[0])
        # it speaks no shuffle (no handler): the node's request to it fails at once, and the
        # node never makes it its partner again, so no reply from it is due
        await trio.sleep(1)
        assert node.sampling.sampler.pending_partner() is None
        frame = ShuffleFrame("reply", ((record(me), 0), (record(other), 0)))
        await raw.send(node.peer_id, SHUFFLE_PROTOCOL, encode_shuffle(frame))
        await wait_for(lambda: node.sampling.refused == {"unasked_reply": 1})
        assert node.live_peer_ids() == frozenset()
        assert node.sampling.sampler.verifier.signature_checks == 0  # refused unread


# ---- dialling ------------------------------------------------------------------------------


def test_the_dial_budget_limits_each_peer_each_address_and_the_total() -> None:
    now = [0.0]
    budget = DialBudget(lambda: now[0], per_peer_s=30, per_address_s=60, rate_per_s=1, burst=2)
    assert budget.allow_peer("a") and not budget.allow_peer("a")
    assert budget.allow_address("/ip4/192.0.2.1/tcp/1", "a") and not budget.allow_address(
        "/ip4/192.0.2.1/tcp/1", "b"
    )
    assert budget.allow_peer("b") and not budget.allow_peer("c")  # the burst is spent
    now[0] = 1.0
    assert budget.allow_peer("c")
    now[0] = 61.0
    assert budget.allow_address("/ip4/192.0.2.1/tcp/1", "b") and budget.allow_peer("a")
    assert budget.refused == {
        "peer_recently_dialled": 1,
        "address_recently_dialled": 1,
        "dial_rate": 1,
    }


def test_the_dial_budget_counts_a_relayed_address_whole() -> None:
    budget = DialBudget(lambda: 0.0)
    relay = "/ip4/198.51.100.10/tcp/4001/p2p/RELAY/p2p-circuit/p2p/"
    # every peer behind one relay shares the relay's part: only the whole address is one way in
    assert budget.allow_address(relay + "A", "A") and budget.allow_address(relay + "B", "B")
    assert not budget.allow_address(relay + "A", "A")


def test_a_dial_that_reached_its_peer_is_not_held_against_a_redial_of_it() -> None:
    now = [0.0]
    budget = DialBudget(lambda: now[0], per_peer_s=30, per_address_s=60)
    addr = "/ip4/192.0.2.1/tcp/1/p2p/a"
    assert budget.allow_peer("a") and budget.allow_address(addr, "a")
    budget.reached("a", addr)
    now[0] = 1.0
    # a proposer drawn again after its connection closed is dialled again at once
    assert budget.allow_peer("a") and budget.allow_address(addr, "a")
    # another peer id claiming the same host and port still waits the address's minute
    assert budget.allow_peer("b") and not budget.allow_address("/ip4/192.0.2.1/tcp/1/p2p/b", "b")
    assert budget.refused == {"address_recently_dialled": 1}


async def test_a_record_without_addresses_does_not_spend_the_peers_dial_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    overlay = MemoryNetwork().open_overlay(NodeIdentity.generate())
    async with overlay as own, trio.open_nursery() as nursery:
        dialer = PeerDialer(own, nursery, check_every_s=1.0, max_peers=16)
        peer = NodeIdentity.generate().peer_id
        # a node behind NAT before its relay reservation: its record names no address yet
        dialer.dial_record(peer, ())
        await trio.sleep(1)
        for _ in range(2):
            dialer.dial_record(peer, listening_at(peer))  # dialled (in vain), then too soon
            await trio.sleep(1)
        # the empty record spent nothing: the first real one was dialled
        assert dialer.budget.refused == {"peer_recently_dialled": 1}
        nursery.cancel_scope.cancel()


async def test_three_hundred_phantoms_are_dialled_once_replaced_as_proposers_and_gone_in_a_ttl(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    async with (
        memory_node(network, tmp_path / "a") as node,
        memory_node(network, tmp_path / "b", node.listen_addrs) as honest,
    ):
        await wait_for(lambda: node.live_peer_ids() == {honest.peer_id})
        config = node.sampling.sampler.config
        target = f"/memory/999/p2p/{NodeIdentity.generate().peer_id}"  # nobody answers there
        for _ in range(300):
            # a made-up identity connects to the honest node, hands it its genuine record
            # naming an address of the attacker's choosing, and leaves; shuffles pass it on
            phantom = NodeIdentity.generate()
            async with network.open_overlay(phantom) as raw:
                await raw.connect(honest.listen_addrs[0])
                await offered(raw, honest, record(phantom, (target,)))
                await trio.sleep(0.05)
        for peer in (node, honest):
            # bounded by the view and the sample stream, whatever the phantoms' number
            assert len(peer.records()) <= 2 * config.capacity
            assert len(peer.live_peer_ids()) > 1  # the last phantoms are still believed
            # every one was dialled, at one address: one dial a minute
            assert peer.snapshot().refusals["dial_address_recently_dialled"] > 0
        # a phantom drawn as a proposer cannot be reached: a live peer replaces it
        # drawn as proposers, phantoms cannot be reached: each costs a failed send at once
        # and is replaced (by another phantom, likely), not a wait for the layer's deadline
        started = trio.current_time()
        answer = await node.ask(QueryRequest("q", 1, 2))
        assert answer.text and trio.current_time() - started < 2.0
        (layer,) = answer.trace.layers
        assert all(m.reason.startswith("unreachable") for m in layer.missing), layer.missing
        # a TTL after the last phantom signed its record, none is left anywhere
        await trio.sleep(config.ttl_s)
        for asker, other in ((node, honest), (honest, node)):
            assert [p.load.peer_id for p in asker.snapshot().peers] == [other.peer_id]
            answer = await asker.ask(QueryRequest("q", 1, 2))
            (layer,) = answer.trace.layers
            assert set(layer.answered) == {node.peer_id, honest.peer_id}
            assert layer.missing == ()


# ---- identities and clocks -----------------------------------------------------------------


def test_a_data_directory_takes_one_node(tmp_path: Path) -> None:
    with (
        data_dir_lock(tmp_path),
        pytest.raises(ConfigError, match="already running"),
        data_dir_lock(tmp_path),
    ):
        pass
    with data_dir_lock(tmp_path):  # released when the first left
        pass


async def test_a_second_node_with_this_nodes_key_is_reported(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    async with (
        memory_node(network, tmp_path / "a") as node,
        memory_node(network, tmp_path / "b", node.listen_addrs),
        memory_node(network, tmp_path / "c", node.listen_addrs),
        network.open_overlay(NodeIdentity.generate()) as raw,
    ):
        await trio.sleep(5)  # its own records come back in shuffles: they are no collision
        assert node.events["identity_collision"] == 0
        # a record signed with this node's key that it did not sign: a twin's
        twin = record(node.identity, ("/memory/77/p2p/x",))
        with caplog.at_level(logging.ERROR, logger="dmoa_p2p.node"):
            await raw.connect(node.listen_addrs[0])
            await offer_records(raw, node.peer_id, [twin])
            await wait_for(lambda: node.events["identity_collision"] == 1, timeout_s=5)
    assert "another node is running with this node's identity" in caplog.text
    assert "/memory/77/p2p/x" in caplog.text


async def test_a_sender_with_a_wrong_clock_is_told_and_moves_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with memory_swarm(tmp_path, [FakeBackend(0.5), FakeBackend(0.5)]) as (fast, peer):
        fast.wall_clock = lambda: wall_clock() + 45.0  # its tasks now look 45 s ahead
        started = trio.current_time()
        with caplog.at_level(logging.WARNING, logger="dmoa_p2p.node"):
            answer = await fast.ask(QueryRequest("q", 1, 1, layer_timeout_s=300.0))
        (layer,) = answer.trace.layers
        (missing,) = layer.missing
        assert missing.node == peer.peer_id and "rejected: future" in missing.reason
        assert trio.current_time() - started < 5  # not the 300 s layer deadline
        assert fast.events["clock_skew_reported"] == 1
        assert peer.snapshot().refusals["direct_rejected"] == 1
    assert "this node's clock is off" in caplog.text
