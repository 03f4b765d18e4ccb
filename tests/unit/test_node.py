"""Node on the in-memory overlay: presence, peer views, expiry, rejections, restarts, notices."""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.http import NodeMetrics
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.logs import EVENTS
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.node import PRESENCE_TOPIC, Node
from dmoa_p2p.node._dialer import MAX_BOOTSTRAP_BACKOFF_S, PeerDialer
from dmoa_p2p.node._known_peers import KNOWN_PEERS_FILE
from dmoa_p2p.overlay import BadAddress, MemoryNetwork, Overlay, OverlayError
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
            # b stops sending presence now; saving its peers on the way out (in a thread)
            # lets the mock clock run on meanwhile
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
        presence = idle_presence(me.peer_id, interval_s=1.0, listen_addrs=claimed)
        await liar.publish(PRESENCE_TOPIC, seal(presence, me, wall_clock()))
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
        await trio.sleep(5)
    said = [r.getMessage() for r in caplog.records if r.name == EVENTS]
    notices = [m.split(":")[0] if "lost" in m else m for m in said if "joined" in m or "lost" in m]
    # a, and each of the three that stayed (it sees a and the two others), joined once; the
    # three that left at once never did; only a, left behind, lost all its peers, once
    assert notices == ["joined the swarm: 3 peers"] * 4 + ["lost all peers"]
    assert said.count("no bootstrap peer given and none remembered: waiting to be dialled") == 1


class ScriptedOverlay:
    """Just enough of an overlay for PeerDialer: each connect() takes the next scripted result."""

    def __init__(self, peer_id: str, script: list[str | None]) -> None:
        self.peer_id = peer_id
        self.script = script
        self.connected: set[str] = set()
        self.attempts: list[float] = []

    def connected_peers(self) -> frozenset[str]:
        return frozenset(self.connected)

    async def connect(self, addr: str) -> str:
        self.attempts.append(trio.current_time())
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
