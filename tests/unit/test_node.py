"""Node on the in-memory overlay: sampled views, expiry, refused records, restarts, notices."""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from pathlib import Path
from typing import cast

import msgpack
import pytest
import trio
import trio.testing

from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.http import NodeMetrics
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.logs import EVENTS
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import SHUFFLE_PROTOCOL, Node, offer_records
from dmoa_p2p.node._dialer import MAX_BOOTSTRAP_BACKOFF_S, PeerDialer
from dmoa_p2p.node._known_peers import KNOWN_PEERS_FILE
from dmoa_p2p.overlay import BadAddress, MemoryNetwork, Overlay, OverlayError
from dmoa_p2p.testing import idle_presence, memory_node, memory_swarm, wait_for, wall_clock
from dmoa_p2p.wire import Refusal, seal
from dmoa_p2p.wire.shuffle import MAX_SHUFFLE_BYTES


async def test_peer_views_converge_and_a_small_swarm_is_all_connected(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.01)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(memory_node(network, tmp_path / "0"))
        nodes = [first] + [
            await stack.enter_async_context(
                memory_node(network, tmp_path / str(i), first.listen_addrs)
            )
            for i in range(1, 4)
        ]
        everyone = {n.peer_id for n in nodes}
        await wait_for(lambda: all(n.live_peer_ids() == everyone - {n.peer_id} for n in nodes))
        # bootstrapped from the first only, yet each dialled the others from their records:
        # three peers are fewer than the neighbours a node keeps
        assert all(len(everyone) - 1 < n.neighbours.target for n in nodes)
        await wait_for(
            lambda: all(n.overlay.connected_peers() == everyone - {n.peer_id} for n in nodes)
        )
        status = nodes[1].snapshot().to_json()
        assert {p["peer_id"] for p in status["peers"]} == everyone - {nodes[1].peer_id}
        assert status["messages"]["rejected"] == {}
        # no record of an honest shuffle is refused; nor is a shuffle, but for newcomers
        # asking at once, who may find a round's share for strangers spent
        for node in nodes:
            assert node.sampling.sampler.verifier.refused == {}
            assert set(node.sampling.refused) <= {"over_answer_budget"}


async def test_a_stopped_node_expires_one_ttl_after_its_last_record(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    async with memory_node(network, tmp_path / "a") as a:
        config = a.sampling.sampler.config
        async with memory_node(network, tmp_path / "b", a.listen_addrs) as b:
            await wait_for(lambda: a.live_peer_ids() == {b.peer_id})
            await trio.sleep(2)  # b shuffles with a, its only neighbour, every round
            # b signs no record from now on; saving its peers on the way out (in a thread)
            # lets the mock clock run on meanwhile
            left_at = trio.current_time()
        await wait_for(lambda: not a.live_peer_ids(), poll_s=0.05)
        waited = trio.current_time() - left_at
        # the last record a holds was signed within the round before b stopped, and counts
        # for one TTL after it was signed: gone about 9 s after b stopped, not a round sooner
        assert config.ttl_s - config.round_s - 0.05 <= waited <= config.ttl_s + 0.1
        await trio.sleep(a.config.presence_interval_s)  # counted at the next check
        assert a.events["peer_joined"] == a.events["peer_expired"] == 1


async def test_forged_stale_future_and_malformed_records_are_counted_and_not_believed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    me = NodeIdentity.generate()
    async with (
        memory_node(network, tmp_path / "a") as a,
        network.open_overlay(me) as intruder,
    ):
        await intruder.connect(a.listen_addrs[0])
        victim = NodeIdentity.generate()
        now = wall_clock()
        genuine = seal(idle_presence(me.peer_id), me, now)
        records = [
            seal(idle_presence(victim.peer_id), me, now),  # the victim's, signed by the intruder
            seal(idle_presence(me.peer_id), me, now - 3600),
            seal(idle_presence(me.peer_id), me, now + 60),
            genuine[:-1] + bytes([genuine[-1] ^ 1]),  # the signature's last byte changed
            seal(Refusal("q", 1, me.peer_id, a.peer_id, "busy", None), me, now),
            b"\xc1 never valid msgpack",
        ]
        await offer_records(intruder, a.peer_id, records)
        await wait_for(lambda: sum(a.sampling.sampler.verifier.refused.values()) == len(records))
        refusals = a.snapshot().refusals
        assert {k: n for k, n in refusals.items() if k.startswith("record_")} == {
            "record_key_mismatch": 1,
            "record_stale": 1,
            "record_future": 1,
            "record_bad_signature": 1,
            "record_wrong_channel": 1,
            "record_malformed": 1,
        }
        assert a.live_peer_ids().isdisjoint({victim.peer_id, me.peer_id})
        # frames that are no shuffle: counted by why, or refused unread when too large
        await intruder.send(a.peer_id, SHUFFLE_PROTOCOL, b"\xc1junk")
        await intruder.send(a.peer_id, SHUFFLE_PROTOCOL, msgpack.packb([2, "request", []]))
        with pytest.raises(OverlayError, match="larger than the receiver's limit"):
            await intruder.send(a.peer_id, SHUFFLE_PROTOCOL, b"\0" * (MAX_SHUFFLE_BYTES + 1))
        await wait_for(lambda: sum(a.sampling.refused.values()) == 2)
        refusals = a.snapshot().refusals
        assert (refusals["shuffle_malformed"], refusals["shuffle_unknown_version"]) == (1, 1)
        assert refusals["direct_too_large"] == 1
        # the way in works: the intruder's own record, signed now, is believed
        await trio.sleep(a.sampling.sampler.config.round_s)  # a new round's frame budget
        fresh = seal(idle_presence(me.peer_id), me, wall_clock())
        await offer_records(intruder, a.peer_id, [fresh])
        await wait_for(lambda: a.live_peer_ids() == {me.peer_id})


async def test_presence_status_and_metrics_read_one_snapshot(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = [FakeBackend(mean_s=0.5), FakeBackend(mean_s=0.5)]
    async with memory_swarm(tmp_path, backends, admission="threshold") as (node, peer):
        await node.ask(QueryRequest("q", 1, 1))
        snapshot = node.snapshot()
        status = snapshot.to_json()
        presence = snapshot.presence()
        metrics = NodeMetrics(node).render().decode()
    assert presence.mean_service_s == status["queue"]["mean_service_s"] == pytest.approx(0.5)
    assert presence.arrival_rate == status["queue"]["arrival_rate"]
    assert [p["peer_id"] for p in status["peers"]] == [peer.peer_id]
    assert status["prompts"] == {"accepted": 1, "answered": 1}
    point = status["operating_point"]
    assert point["rho_threshold"] == 0.9  # threshold's rho_max, not the stability bound
    assert set(point["rho_by_peer"]) == {node.peer_id, peer.peer_id}
    assert f"dmoa_rho {point['rho']}" in metrics
    assert 'dmoa_prompts_total{outcome="answered"} 1.0' in metrics


async def test_a_restarted_node_redials_the_peers_it_remembers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(latency_s=0.01)
    stop_a, a_stopped = trio.CancelScope(), trio.Event()

    async def run_a(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        with stop_a:
            async with memory_node(network, tmp_path / "a") as node:
                task_status.started(node)
                await trio.sleep_forever()
        a_stopped.set()

    async with trio.open_nursery() as nursery:
        a: Node = await nursery.start(run_a)
        async with memory_node(network, tmp_path / "b", a.listen_addrs) as b:
            await wait_for(lambda: a.live_peer_ids() == {b.peer_id})
            await trio.sleep(2)  # a remembers b, and saves it when it stops
            stop_a.cancel()
            await a_stopped.wait()
            assert (tmp_path / "a" / KNOWN_PEERS_FILE).exists()
            await wait_for(lambda: not b.live_peer_ids())
            # a comes back on another address: b's bootstrap address for it is dead now,
            # so only a's memory of b can bring them together
            async with memory_node(network, tmp_path / "a") as a_again:
                assert a_again.peer_id == a.peer_id
                assert a_again.known_peers.peers()[0][0] == b.peer_id
                started = trio.current_time()
                await wait_for(lambda: a_again.live_peer_ids() == {b.peer_id})
                await wait_for(lambda: b.live_peer_ids() == {a.peer_id})
                assert trio.current_time() - started < 5.0


async def test_a_peer_can_make_a_node_remember_only_its_own_address(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    me = NodeIdentity.generate()
    async with memory_node(network, tmp_path / "a") as a, network.open_overlay(me) as liar:
        await liar.connect(a.listen_addrs[0])
        (own,) = liar.listen_addrs
        claimed = (
            f"/ip4/127.0.0.1/tcp/22/p2p/{me.peer_id}",  # a's own loopback
            f"/memory/999/p2p/{me.peer_id}",  # another host
            a.listen_addrs[0],  # another peer's address
            own,
        )
        presence = idle_presence(me.peer_id, listen_addrs=claimed)
        await offer_records(liar, a.peer_id, [seal(presence, me, wall_clock())])
        await wait_for(lambda: me.peer_id in dict(a.known_peers.peers()))
        assert dict(a.known_peers.peers())[me.peer_id] == (own,)


async def test_the_user_hears_of_joining_and_losing_the_swarm_once_each(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    network = MemoryNetwork(latency_s=0.01)
    caplog.set_level(logging.INFO, logger=EVENTS)
    async with memory_node(network, tmp_path / "a") as a:
        for i in range(3):
            async with memory_node(network, tmp_path / str(i), a.listen_addrs):
                pass
        async with contextlib.AsyncExitStack() as stack:
            for i in range(3):
                await stack.enter_async_context(
                    memory_node(network, tmp_path / str(i), a.listen_addrs)
                )
            await wait_for(lambda: len(a.live_peer_ids()) == 3)
            await trio.sleep(5)
        await wait_for(lambda: not a.live_peer_ids())
        # waited for, not slept for: the node notices at its next check, not at once
        await wait_for(lambda: any("lost all" in r.getMessage() for r in caplog.records))
        await trio.sleep(5)
    said = [r.getMessage() for r in caplog.records if r.name == EVENTS]
    notices = [m.split(":")[0] for m in said if "joined" in m or "lost" in m]
    # a, and each of the three that stayed (it sees a and the two others), joined once; the
    # three that left at once never did; only a, left behind, lost all its peers, once
    assert notices == ["joined the swarm"] * 4 + ["lost all peers"]
    # the size it names is the sample's once it held still a check: all 3, or 2 on the way
    sizes = [m for m in said if m.startswith("joined the swarm")]
    assert all(m in ("joined the swarm: 3 peers", "joined the swarm: 2 peers") for m in sizes)
    assert said.count("no bootstrap peer given and none remembered: waiting to be dialled") == 1


class ScriptedOverlay:
    """Just enough of an overlay for PeerDialer: each connect() takes the next scripted result."""

    def __init__(self, peer_id: str, script: list[str | None], dial_s: float = 0.0) -> None:
        self.peer_id = peer_id
        self.script = script
        self.dial_s = dial_s  # how long each connect() takes
        self.connected: set[str] = set()
        self.attempts: list[float] = []

    def connected_peers(self) -> frozenset[str]:
        return frozenset(self.connected)

    async def connect(self, addr: str) -> str:
        self.attempts.append(trio.current_time())
        await trio.sleep(self.dial_s)
        outcome = self.script.pop(0) if self.script else "Connection refused"
        if outcome == "drop":
            self.connected.clear()
            outcome = "Connection refused"
        if outcome is not None:
            raise OverlayError(f"cannot connect to {addr!r}: {outcome}")
        self.connected.add(self.peer_id)
        return self.peer_id


async def test_an_unreachable_bootstrap_is_said_once_per_reason_and_redialled_within_5_s(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    peer = NodeIdentity.generate().peer_id
    addr = f"/ip4/127.0.0.1/tcp/4001/p2p/{peer}"
    script: list[str | None] = ["Connection refused"] * 12
    script += ["no answer within 10 s"] * 2
    overlay = ScriptedOverlay(peer, [*script, None])
    caplog.set_level(logging.INFO, logger=EVENTS)
    async with trio.open_nursery() as nursery:
        dialer = PeerDialer(cast(Overlay, overlay), nursery, 1.0, 16)
        nursery.start_soon(dialer.keep_connected, addr)
        await wait_for(lambda: overlay.connected == {peer}, timeout_s=120)
        overlay.connected.clear()  # the peer went away
        await wait_for(lambda: len(overlay.attempts) == 17, timeout_s=120)
        nursery.cancel_scope.cancel()
    said = [r.getMessage() for r in caplog.records if r.name == EVENTS]
    assert said == [
        f"bootstrap peer {addr} is unreachable: Connection refused",
        f"bootstrap peer {addr} is unreachable: no answer within 10 s",
        f"reached bootstrap peer {addr}",
        f"bootstrap peer {addr} is unreachable: Connection refused",
    ]
    gaps = [b - a for a, b in itertools.pairwise(overlay.attempts[:15])]
    assert max(gaps) <= MAX_BOOTSTRAP_BACKOFF_S + 0.01


async def test_a_task_to_a_peer_being_dialled_waits_for_that_dial(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = NodeIdentity.generate().peer_id
    addrs = [f"/ip4/127.0.0.1/tcp/4001/p2p/{peer}"]
    # a circuit through a relay on a loaded machine: the dial takes a while
    overlay = ScriptedOverlay(peer, [None], dial_s=2.0)
    async with trio.open_nursery() as nursery:
        dialer = PeerDialer(cast(Overlay, overlay), nursery, 1.0, 16)
        dialer.dial_record(peer, addrs)  # the neighbours' dial, begun first
        await trio.sleep(0.5)
        await dialer.dial_now(peer, addrs)  # a drawn proposer's task must not go out before it
        assert overlay.connected == {peer} and trio.current_time() == 2.0
        assert overlay.attempts == [0.0]  # one dial, waited for, not a second
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "bootstrap",
    [
        "/ip4/999.0.0.1/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
        "/ip4/127.0.0.1/tcp/4001/p2p/notapeerid",
        "/ip4/127.0.0.1/tcp/99999/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
    ],
)
async def test_a_bootstrap_address_that_can_never_work_refuses_to_start(
    tmp_path: Path, bootstrap: str
) -> None:
    with pytest.raises(BadAddress, match=re.escape(repr(bootstrap))) as caught:
        async with memory_node(MemoryNetwork(), tmp_path, [bootstrap]):
            pass
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "node.lock").exists()  # refused before anything started


async def test_a_peer_of_another_protocol_version_is_named_once_and_left_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # a node of protocol 2 (all-to-all presence) has no handler for /dmoa-p2p/shuffle/3
    network = MemoryNetwork()
    old = NodeIdentity.generate()
    async with memory_node(network, tmp_path) as node, network.open_overlay(old) as peer:
        await peer.connect(node.listen_addrs[0])
        await trio.sleep(10)  # twenty rounds: it is the node's only neighbour
        said = [r.getMessage() for r in caplog.records if old.peer_id in r.getMessage()]
        assert len(said) == 1 and "another version" in said[0] and "upgrade" in said[0]
        assert node.sampling.sampler.pending_partner() is None
        assert old.peer_id not in node.live_peer_ids()


async def test_a_record_naming_no_address_is_no_proposer_until_its_peer_is_connected(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # a peer that is not yet told it is public names no address: a task to it could not go
    network = MemoryNetwork(latency_s=0.005)
    silent, listening = NodeIdentity.generate(), NodeIdentity.generate()
    home = (f"/ip4/127.0.0.1/tcp/4001/p2p/{listening.peer_id}",)
    records = [
        seal(idle_presence(who.peer_id, listen_addrs=addrs, models=("m",)), who, wall_clock())
        for who, addrs in [(silent, ()), (listening, home)]
    ]
    async with memory_node(network, tmp_path) as node:
        async with network.open_overlay(NodeIdentity.generate()) as stranger:
            await stranger.connect(node.listen_addrs[0])
            await offer_records(stranger, node.peer_id, records)
            await trio.sleep(0.05)
        assert {silent.peer_id, listening.peer_id} <= set(node.sampling.sampler.view.peer_ids())
        assert silent.peer_id not in node.live_peer_ids()
        assert listening.peer_id in node.live_peer_ids()
        async with network.open_overlay(silent) as own:
            await own.connect(node.listen_addrs[0])  # it dials in: now a task reaches it
            assert silent.peer_id in node.live_peer_ids()
