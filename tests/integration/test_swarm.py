"""Real py-libp2p swarms on 127.0.0.1: convergence, delivery, forged records, expiry, restarts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import msgpack
import pytest
import trio

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import Node, offer_records
from dmoa_p2p.overlay import OverlayMessage, open_libp2p_overlay
from dmoa_p2p.swarm import open_inprocess_swarm, open_process_swarm
from dmoa_p2p.testing import idle_presence
from dmoa_p2p.wire import Presence, WireError, seal

pytestmark = pytest.mark.integration
LOCALHOST = "/ip4/127.0.0.1/tcp/0"
# these tests are about the overlay: the fake backend keeps model loading out of them
FAKE: dict[str, Any] = {"backend": "fake", "presence_interval_s": 0.5}
FAKE_ARGS = ["--backend", "fake"]


async def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling other tasks' state is the point
            await trio.sleep(0.05)


def presence_of(identity: NodeIdentity) -> Presence:
    return idle_presence(identity.peer_id)


def gate_check(node: Node) -> Callable[[str, bytes], bool]:
    def check(publisher: str, data: bytes) -> bool:
        try:
            node.gate.admit(data, publisher)
        except WireError:
            return False
        return True

    return check


async def test_five_nodes_converge_and_a_message_reaches_all(tmp_path: Path) -> None:
    async with open_inprocess_swarm(5, tmp_path, **FAKE) as swarm:
        await swarm.wait_converged(timeout_s=20)  # raises if it does not
        # each node's wire gate checks the test topic
        inboxes = [await n.overlay.subscribe("test/v1", gate_check(n)) for n in swarm.nodes]
        sender = swarm.nodes[0]
        data = seal(presence_of(sender.identity), sender.identity, now=sender.wall_clock())

        async def publish_until_heard() -> None:
            while True:  # the new topic's subscriptions spread meanwhile; cancelled once heard
                await sender.overlay.publish("test/v1", data)
                await trio.sleep(0.2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_until_heard)
            with trio.fail_after(10):
                for inbox in inboxes:
                    message: OverlayMessage = await inbox.receive()
                    assert message.data == data
                    assert message.publisher == sender.peer_id
            nursery.cancel_scope.cancel()


async def test_forged_records_from_a_raw_peer_are_refused_and_not_passed_on(
    tmp_path: Path,
) -> None:
    async with open_inprocess_swarm(2, tmp_path, **FAKE) as swarm:
        await swarm.wait_converged(timeout_s=20)
        honest, behind = swarm.nodes
        raw_identity = NodeIdentity.generate()
        # a bare overlay: libp2p only, none of the node's checks; without a DHT it stays
        # connected to the honest node alone
        async with open_libp2p_overlay(raw_identity, [LOCALHOST], dht=False) as raw:
            await raw.connect(honest.listen_addrs[0])
            await wait_for(lambda: honest.peer_id in raw.connected_peers())
            now = honest.wall_clock()
            own = presence_of(raw_identity)
            # its own record, its body changed after signing
            fields = msgpack.unpackb(seal(own, raw_identity, now))
            fields[6]["queue_capacity"] = 99  # the body changed, the signature kept
            tampered = msgpack.packb(fields)
            impostor = seal(presence_of(honest.identity), raw_identity, now)  # raw's key
            stale = seal(own, raw_identity, now - 3600)
            future = seal(own, raw_identity, now + 3600)
            forged = [tampered, impostor, stale, future, b"\xc1junk"]
            await offer_records(raw, honest.peer_id, forged)

            # a valid record offered after the forged ones crosses to the node behind...
            def heard_marked() -> bool:
                return any(
                    r.peer_id == raw_identity.peer_id and r.presence.queue_capacity == 7
                    for r in behind.sampling.held()
                )

            marked = attrs.evolve(own, queue_capacity=7)
            with trio.fail_after(15):
                while not heard_marked():  # offered again if the honest node was busy
                    valid = seal(marked, raw_identity, honest.wall_clock())
                    await offer_records(raw, honest.peer_id, [valid])
                    await trio.sleep(0.5)
            verifier = honest.sampling.sampler.verifier
            refused = {str(reason): n for reason, n in verifier.refused.items()}
            assert refused == {
                "bad_signature": 1,
                "key_mismatch": 1,
                "stale": 1,
                "future": 1,
                "malformed": 1,
            }, refused
            # ...while none of the forged ones did
            assert sum(behind.sampling.sampler.verifier.refused.values()) == 0


async def test_a_stopped_node_leaves_every_peer_view_a_ttl_after_its_last_record(
    tmp_path: Path,
) -> None:
    async with open_inprocess_swarm(3, tmp_path, **FAKE) as swarm:
        await swarm.wait_converged(timeout_s=20)
        leaver = swarm.nodes[2]
        ttl = leaver.sampling.sampler.config.ttl_s
        stopped_at = trio.current_time()
        await swarm.stop(2)
        others = swarm.running()
        await wait_for(
            lambda: all(leaver.peer_id not in n.live_peer_ids() for n in others), ttl + 5
        )
        # every round it signed a record and shuffled it to a neighbour, which passed it on;
        # the freshest one anybody held counts for one TTL after it was signed
        elapsed = trio.current_time() - stopped_at
        assert ttl - 1.5 < elapsed < ttl + 2.0, elapsed


async def test_repeated_start_and_stop_is_clean(tmp_path: Path) -> None:
    rounds = []
    for _ in range(3):
        async with open_inprocess_swarm(2, tmp_path / "swarm", **FAKE) as swarm:
            await swarm.wait_converged(timeout_s=20)
            rounds.append(tuple(n.peer_id for n in swarm.nodes))
    # the same data directories keep the same identities across restarts
    assert rounds == [rounds[0]] * 3 and len(set(rounds[0])) == 2


async def test_node_processes_and_the_peers_command(tmp_path: Path) -> None:
    async with open_process_swarm(3, tmp_path, node_args=FAKE_ARGS) as swarm:
        await swarm.wait_converged(timeout_s=60)
        result = await trio.run_process(
            [sys.executable, "-m", "dmoa_p2p", "peers", "--json",
             "--data-dir", str(swarm.members[0].data_dir)],
            capture_stdout=True,
        )
        report = json.loads(result.stdout)
        seen = {peer["peer_id"] for peer in report["peers"]}
        assert seen == {m.peer_id for m in swarm.members[1:]}
        assert report["peer_id"] == swarm.members[0].peer_id
        assert report["rejected_messages"] == {} and "direct_too_large" in report["refusals"]
    assert all(p.returncode == 0 for p in swarm.processes)


def test_swarm_command_converges_and_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dmoa_p2p", "swarm", "--nodes", "3", "--duration", "1", *FAKE_ARGS,
         "--json", "--base-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["nodes"]) == 3
    assert len({node["peer_id"] for node in report["nodes"]}) == 3
    # timed from the start, node start-up included: convergence cannot come before it
    assert 0 < report["up_s"] <= report["converged_s"] < 120
