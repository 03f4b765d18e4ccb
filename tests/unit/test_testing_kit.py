"""The testing kit: its fixtures, seeded swarms and fake backends."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.overlay import MemoryNetwork
from dmoa_p2p.testing import (
    EPOCH,
    Libp2pSwarmFactory,
    MemorySwarmFactory,
    converged,
    fake_backends,
    free_tcp_port,
    memory_node,
    wait_for,
    wall_clock,
)


def test_a_free_tcp_port_can_be_listened_on() -> None:
    port = free_tcp_port()
    assert 1024 <= port <= 65535
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(1)


def test_fake_backends_are_seeded_one_apart() -> None:
    backends = fake_backends(3, mean_s=1.0, distribution="exponential", seed=7)
    again = fake_backends(3, mean_s=1.0, distribution="exponential", seed=7)
    times = [b.service_time() for b in backends]
    assert times == [b.service_time() for b in again]
    assert len(set(times)) == 3


async def test_wall_clock_follows_trios_clock() -> None:
    assert wall_clock() == pytest.approx(EPOCH + trio.current_time())


async def test_a_memory_swarm_converges_and_answers(
    memory_swarm_factory: MemorySwarmFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with memory_swarm_factory(fake_backends(3, mean_s=0.1)) as nodes:
        assert converged(nodes)
        answer = await nodes[0].ask(QueryRequest("hello", 1, 2))
        assert {call.node for call in answer.trace.calls} == {n.peer_id for n in nodes}
    # identities come from the seed: the same on every run, others for another seed
    async with memory_swarm_factory(fake_backends(2)) as again:
        assert [n.peer_id for n in again] == [n.peer_id for n in nodes[:2]]
    async with memory_swarm_factory(fake_backends(2), seed=1) as other:
        assert {n.peer_id for n in other}.isdisjoint(n.peer_id for n in nodes)


async def test_the_same_seed_draws_the_same_proposers(
    memory_swarm_factory: MemorySwarmFactory, autojump_clock: trio.testing.MockClock
) -> None:
    chosen = []
    for _ in range(2):
        async with memory_swarm_factory(fake_backends(4, mean_s=0.1), seed=3) as nodes:
            answer = await nodes[0].ask(QueryRequest("hello", 1, 1))
            index = {n.peer_id: i for i, n in enumerate(nodes)}
            chosen.append(sorted(index[call.node] for call in answer.trace.calls))
    assert chosen[0] == chosen[1]


async def test_memory_node_on_the_network_fixture(
    memory_network: MemoryNetwork,
    fake_backend: FakeBackend,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_node(memory_network, tmp_path / "a", backend=fake_backend) as a,
        memory_node(memory_network, tmp_path / "b", a.listen_addrs) as b,
    ):
        await wait_for(lambda: a.live_peer_ids() == {b.peer_id})
        assert a.backend is fake_backend


@pytest.mark.integration
async def test_a_libp2p_swarm_on_localhost(libp2p_swarm_factory: Libp2pSwarmFactory) -> None:
    async with libp2p_swarm_factory(2, presence_interval_s=0.5) as swarm:
        assert all("/ip4/127.0.0.1/" in m.dial_addr for m in swarm.members)
        answer = await swarm.nodes[1].ask(QueryRequest("hello", 1, 1))
        assert answer.text
