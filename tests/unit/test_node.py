"""Node on the in-memory overlay: presence, peer view convergence, expiry, rejection counts."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio
import trio.testing

from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.http import NodeMetrics
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import PRESENCE_TOPIC
from dmoa_p2p.overlay import MemoryNetwork
from dmoa_p2p.testing import idle_presence, memory_node, memory_swarm, wait_for, wall_clock
from dmoa_p2p.wire import seal


async def test_peer_views_converge_and_peers_dial_each_other(
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
        # bootstrapped from the first only, yet everyone dialled everyone from presence
        await wait_for(
            lambda: all(n.overlay.connected_peers() == everyone - {n.peer_id} for n in nodes)
        )
        status = nodes[1].snapshot().to_json()
        assert {p["peer_id"] for p in status["peers"]} == everyone - {nodes[1].peer_id}
        assert status["messages"]["rejected"] == {}


async def test_a_stopped_node_expires_after_missed_heartbeats(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    async with memory_node(network, tmp_path / "a") as a:
        async with memory_node(network, tmp_path / "b", a.listen_addrs) as b:
            await wait_for(lambda: a.live_peer_ids() == {b.peer_id})
        left_at = trio.current_time()
        await wait_for(lambda: not a.live_peer_ids())
        waited = trio.current_time() - left_at
        # 3 missed periods of 1 s: gone after about 3 s, not before 2
        assert 2.0 <= waited <= 4.0
        assert a.events["peer_expired"] == 1


async def test_forged_presence_is_rejected_and_counted(
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
        # a presence in the victim's name, signed by the intruder's key
        forged = idle_presence(victim.peer_id, interval_s=1.0)
        await intruder.publish(PRESENCE_TOPIC, seal(forged, me, wall_clock()))
        stale = seal(idle_presence(me.peer_id, interval_s=1.0), me, wall_clock() - 3600)
        await intruder.publish(PRESENCE_TOPIC, stale)
        # the victim's own presence, passed on as the intruder's
        await intruder.publish(PRESENCE_TOPIC, seal(forged, victim, wall_clock()))
        await intruder.publish(PRESENCE_TOPIC, b"\xc1 never valid msgpack")
        await wait_for(lambda: sum(a.gate.rejections.values()) == 4)
        assert {str(r): n for r, n in a.gate.rejections.items()} == {
            "key_mismatch": 1,
            "stale": 1,
            "wrong_publisher": 1,
            "malformed": 1,
        }
        assert victim.peer_id not in a.live_peer_ids()


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
