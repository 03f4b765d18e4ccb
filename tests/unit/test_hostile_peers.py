"""Hostile peers on the in-memory overlay: a view that must be earned, bounded dialling,
identity collisions, clock skew told to the sender."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.config import ConfigError
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import PRESENCE_TOPIC, PeerView
from dmoa_p2p.node._dialer import DialBudget, PeerDialer
from dmoa_p2p.node._lock import data_dir_lock
from dmoa_p2p.node._presence import PresencePace, PresenceService
from dmoa_p2p.overlay import MemoryNetwork
from dmoa_p2p.testing import idle_presence, memory_node, memory_swarm, wait_for, wall_clock
from dmoa_p2p.wire import Presence, RejectReason, seal


def presence(peer_id: str, ip: str = "127.0.0.1", interval_s: float = 1.0) -> Presence:
    addr = f"/ip4/{ip}/tcp/4001/p2p/{peer_id}"
    return idle_presence(peer_id, listen_addrs=(addr,), models=("m",), interval_s=interval_s)


def test_a_presence_alone_does_not_make_a_proposer_candidate() -> None:
    view = PeerView("me", missed_limit=3.0)
    assert view.observe(presence("phantom"), now=0.0) is False
    assert view.live_ids(0.0) == frozenset()
    assert [r.peer_id for r in view.pending(0.0)] == ["phantom"]
    assert view.verify(["phantom"]) == ["phantom"]  # this node reached it
    assert view.live_ids(0.0) == {"phantom"}
    view.expire(10.0)
    # back after expiring: already verified once, so it joins at once
    assert view.observe(presence("phantom"), now=11.0) is True


def test_pending_peers_and_peers_per_ip_are_bounded() -> None:
    view = PeerView("me", missed_limit=3.0, max_pending=4, max_per_ip=2)
    for i in range(10):
        view.observe(presence(f"p{i}", ip=f"10.0.0.{i}", interval_s=60.0), now=float(i))
    assert [r.peer_id for r in view.pending(9.0)] == ["p6", "p7", "p8", "p9"]
    assert view.refused["pending_full"] == 6
    for i in range(3):
        view.observe(presence(f"same{i}", ip="192.0.2.7", interval_s=60.0), now=10.0)
    assert view.refused["same_ip"] == 1
    assert len(view) == 4  # pending still bounded


def test_peers_behind_one_relay_are_not_taken_for_one_host() -> None:
    view = PeerView("me", missed_limit=3.0, max_per_ip=2)
    relay = "/ip4/198.51.100.10/tcp/4001/p2p/RELAY/p2p-circuit/p2p/"
    for i in range(5):
        behind = attrs.evolve(presence(f"n{i}"), listen_addrs=(relay + f"n{i}",))
        view.observe(behind, now=0.0)
    assert len(view.pending(0.0)) == 5 and view.refused["same_ip"] == 0


def test_the_dial_budget_limits_each_peer_each_address_and_the_total() -> None:
    now = [0.0]
    budget = DialBudget(lambda: now[0], per_peer_s=30, per_address_s=60, rate_per_s=1, burst=2)
    assert budget.allow_peer("a") and not budget.allow_peer("a")
    assert budget.allow_address("/ip4/192.0.2.1/tcp/1") and not budget.allow_address(
        "/ip4/192.0.2.1/tcp/1"
    )
    assert budget.allow_peer("b") and not budget.allow_peer("c")  # the burst is spent
    now[0] = 1.0
    assert budget.allow_peer("c")
    now[0] = 61.0
    assert budget.allow_address("/ip4/192.0.2.1/tcp/1") and budget.allow_peer("a")
    assert budget.refused == {
        "peer_recently_dialled": 1,
        "address_recently_dialled": 1,
        "dial_rate": 1,
    }


def test_the_dial_budget_counts_a_relayed_address_whole() -> None:
    budget = DialBudget(lambda: 0.0)
    relay = "/ip4/198.51.100.10/tcp/4001/p2p/RELAY/p2p-circuit/p2p/"
    # every peer behind one relay shares the relay's part: only the whole address is one way in
    assert budget.allow_address(relay + "A") and budget.allow_address(relay + "B")
    assert not budget.allow_address(relay + "A")


async def test_a_presence_without_addresses_does_not_spend_the_peers_dial_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    overlay = MemoryNetwork().open_overlay(NodeIdentity.generate())
    async with overlay as own, trio.open_nursery() as nursery:
        dialer = PeerDialer(own, nursery, check_every_s=1.0, max_peers=16)
        peer = NodeIdentity.generate().peer_id
        # a node behind NAT before its relay reservation: it names no address yet
        dialer.dial_if_useful(attrs.evolve(presence(peer), listen_addrs=()))
        await trio.sleep(1)
        for _ in range(2):
            dialer.dial_if_useful(presence(peer))  # dialled (in vain), then too soon again
            await trio.sleep(1)
        # the empty presence spent nothing: the first real one was dialled
        assert dialer.budget.refused == {"peer_recently_dialled": 1}
        nursery.cancel_scope.cancel()


async def test_three_hundred_phantoms_are_dialled_once_and_never_proposers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    async with (
        memory_node(network, tmp_path / "a") as node,
        memory_node(network, tmp_path / "b", node.listen_addrs) as honest,
    ):
        await wait_for(lambda: node.live_peer_ids() == {honest.peer_id})
        target = f"/memory/999/p2p/{NodeIdentity.generate().peer_id}"  # nobody answers there
        for _ in range(300):
            # a made-up identity connects to the honest node, announces an address of the
            # attacker's choosing, and leaves; the honest node relays it on
            phantom = NodeIdentity.generate()
            fake = attrs.evolve(presence(phantom.peer_id), listen_addrs=(target,), interval_s=60.0)
            async with network.open_overlay(phantom) as raw:
                await raw.connect(honest.listen_addrs[0])
                await raw.publish(PRESENCE_TOPIC, seal(fake, phantom, wall_clock()))
                await trio.sleep(0.05)
        await trio.sleep(5)
        snapshot = node.snapshot()
        assert [p.load.peer_id for p in snapshot.peers] == [honest.peer_id]
        assert 0 < snapshot.pending_peers <= 64
        assert snapshot.refusals["presence_pending_full"] > 0
        assert snapshot.refusals["dial_address_recently_dialled"] > 0
        # the relay had a connection to each phantom, but none is there any more
        assert len(honest.snapshot().peers) > 1
        for asker in (node, honest):
            answer = await asker.ask(QueryRequest("q", 1, 2))
            (layer,) = answer.trace.layers
            assert set(layer.answered) == {node.peer_id, honest.peer_id}
            assert layer.missing == ()


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
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    identity = NodeIdentity.generate()
    network = MemoryNetwork(latency_s=0.005)
    events: Counter[str] = Counter()
    async with network.open_overlay(identity) as overlay, trio.open_nursery() as nursery:
        inbox = await overlay.subscribe(PRESENCE_TOPIC, lambda _publisher, _data: True)
        service = PresenceService(
            overlay,
            identity,
            PeerView(identity.peer_id, 3.0),
            lambda: presence(identity.peer_id),
            wall_clock,
            1.0,
            events,
        )
        await nursery.start(service.run, inbox, PeerDialer(overlay, nursery, 1.0, 16))
        await trio.sleep(5)  # its own presences come back: they are no collision
        assert events["presence_published"] >= 5 and events["identity_collision"] == 0
        # a presence signed with this node's key that it did not publish: a twin
        twin = attrs.evolve(presence(identity.peer_id), listen_addrs=("/memory/77/p2p/x",))
        with caplog.at_level(logging.ERROR, logger="dmoa_p2p.node"):
            await overlay.publish(PRESENCE_TOPIC, seal(twin, identity, wall_clock()))
            await wait_for(lambda: events["identity_collision"] == 1)
        nursery.cancel_scope.cancel()
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


async def test_presences_faster_than_half_their_interval_are_dropped_unverified(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pace = PresencePace()
    identity = NodeIdentity.generate()

    def sealed() -> bytes:
        return seal(presence(identity.peer_id, interval_s=2.0), identity, wall_clock())

    me = identity.peer_id
    assert not pace.too_soon(sealed(), me)  # nothing accepted from this author yet
    pace.accepted(me)
    await trio.sleep(0.5)
    assert pace.too_soon(sealed(), me)  # within half of its 2 s interval
    await trio.sleep(0.6)
    assert not pace.too_soon(sealed(), me)
    assert not pace.too_soon(b"\xc1junk", me)  # the gate rejects that, and counts why
    assert pace.dropped == 1


async def test_copies_of_a_peers_presence_sent_by_another_never_get_it_blocked(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A framer republishes an honest peer's genuine presence, 200 times in a second, as its
    own: the gate refuses every copy (wrong publisher); none counts against the honest peer."""
    network = MemoryNetwork(latency_s=0.005)
    honest, framer = NodeIdentity.generate(), NodeIdentity.generate()
    async with (
        memory_node(network, tmp_path / "a") as node,
        network.open_overlay(framer) as raw,
        network.open_overlay(honest) as own,
    ):
        await raw.connect(node.listen_addrs[0])
        await own.connect(node.listen_addrs[0])
        await own.publish(PRESENCE_TOPIC, seal(presence(honest.peer_id), honest, wall_clock()))
        await wait_for(lambda: node.gate.accepted > 0)  # the honest peer's pace is set
        for _ in range(200):
            genuine = seal(presence(honest.peer_id, interval_s=2.0), honest, wall_clock())
            await raw.publish(PRESENCE_TOPIC, genuine)
            await trio.sleep(0.005)
        await trio.sleep(1)
        assert node.events["flooder_blocked"] == 0
        assert node.snapshot().refusals["presence_too_frequent"] == 0
        assert node.gate.rejections[RejectReason.WRONG_PUBLISHER] == 200


async def test_a_presence_flooder_is_blocked_for_a_while(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.005)
    flooder = NodeIdentity.generate()
    async with (
        memory_node(network, tmp_path / "a") as node,
        network.open_overlay(flooder) as raw,
    ):
        await raw.connect(node.listen_addrs[0])
        own = presence(flooder.peer_id, interval_s=2.0)
        for _ in range(200):  # its own presence, 200 times in a second: 2 s is its interval
            await raw.publish(PRESENCE_TOPIC, seal(own, flooder, wall_clock()))
            await trio.sleep(0.005)
        await trio.sleep(1)
        assert node.events["flooder_blocked"] == 1
        refusals = node.snapshot().refusals
        assert refusals["presence_flooders_blocked"] == 1
        dropped = refusals["presence_too_frequent"]
        assert 60 < dropped < 200  # once blocked, the overlay drops them before any check
        await trio.sleep(700)  # the block is lifted after 10 minutes
        assert node.snapshot().refusals["presence_flooders_blocked"] == 0
        await raw.publish(PRESENCE_TOPIC, seal(presence(flooder.peer_id), flooder, wall_clock()))
        await wait_for(lambda: flooder.peer_id in node.live_peer_ids())  # heard again
