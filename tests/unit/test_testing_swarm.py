"""The testing kit's swarms: who bootstraps from whom, and that they converge either way."""

from __future__ import annotations

import random
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio.testing

from dmoa_p2p.node import Node
from dmoa_p2p.overlay import MemoryNetwork
from dmoa_p2p.swarm import dial_addr
from dmoa_p2p.testing import converged, memory_node, open_swarm


async def contacts_in(
    tmp_path: Path, count: int, spread: random.Random | None
) -> list[int | None]:
    """Each node's bootstrap contact, as the index of the node it dialled (None: none)."""
    network = MemoryNetwork()
    given: list[tuple[str, ...]] = []

    def member(i: int, bootstrap: tuple[str, ...]) -> AbstractAsyncContextManager[Node]:
        given.append(bootstrap)
        return memory_node(network, tmp_path / str(i), bootstrap, rng=random.Random(i))

    async with open_swarm(count, member, spread=spread) as nodes:
        assert converged(nodes)
        addrs = [dial_addr(node.listen_addrs) for node in nodes]
    return [addrs.index(b[0]) if b else None for b in given]


async def test_a_swarm_bootstraps_from_its_first_node_unless_spread(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    assert await contacts_in(tmp_path / "first", 12, None) == [None] + [0] * 11
    spread = await contacts_in(tmp_path / "spread", 12, random.Random(3))
    assert spread[0] is None
    chosen = [c for c in spread[1:] if c is not None]
    assert len(chosen) == 11 and all(c < i for i, c in enumerate(chosen, start=1))
    assert len(set(chosen)) >= 4  # a random earlier node each: not all the first
