"""Nodes on the in-memory overlay with fake backends, for tests under trio's MockClock."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from dmoa_p2p.backends import Backend
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.config import NodeConfig
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import Node, OverlayOpener, open_node
from dmoa_p2p.overlay import MemoryNetwork, Overlay
from dmoa_p2p.testing._swarm import open_swarm
from dmoa_p2p.testing._time import wall_clock

DEFAULT_LATENCY_S = 0.005  # one way, per message


def memory_opener(network: MemoryNetwork) -> OverlayOpener:
    """An `overlay_opener` for `open_node` that joins `network` (listen addresses unused)."""

    def opener(
        identity: NodeIdentity, _listen_addrs: Sequence[str]
    ) -> AbstractAsyncContextManager[Overlay]:
        return network.open_overlay(identity)

    return opener


def seeded_identity(seed: int, index: int) -> NodeIdentity:
    """The identity of node `index` in a swarm seeded with `seed`: the same on every run."""
    return NodeIdentity.from_seed(hashlib.sha256(f"dmoa-testing/{seed}/{index}".encode()).digest())


@contextlib.asynccontextmanager
async def memory_node(
    network: MemoryNetwork,
    data_dir: Path,
    bootstrap: Sequence[str] = (),
    backend: Backend | None = None,
    *,
    identity: NodeIdentity | None = None,
    rng: random.Random | None = None,
    **config: Any,
) -> AsyncIterator[Node]:
    """A node on `network` with `backend` (default: a fake one) and the virtual wall clock.

    `config` holds NodeConfig fields; presence goes out every second unless it says otherwise.
    Without `identity` the node keeps its key in `data_dir`.
    """
    settings = NodeConfig(
        data_dir=data_dir, bootstrap=tuple(bootstrap), **{"presence_interval_s": 1.0, **config}
    )
    async with open_node(
        settings,
        identity=identity,
        overlay_opener=memory_opener(network),
        backend=backend or FakeBackend(),
        wall_clock=wall_clock,
        rng=rng,
        writes_in_thread=False,
    ) as node:
        yield node


@contextlib.asynccontextmanager
async def memory_swarm(
    tmp_path: Path,
    backends: Sequence[Backend],
    *,
    seed: int = 0,
    latency_s: float = DEFAULT_LATENCY_S,
    **config: Any,
) -> AsyncIterator[list[Node]]:
    """One node per backend on a new in-memory network; yields once every view is complete.

    Node i keeps its data in `tmp_path / str(i)`, bootstraps from node 0, has the identity
    `seeded_identity(seed, i)` and draws its proposers with `random.Random(seed + i)`, so a
    run repeats. `config` as in `memory_node`.
    """
    network = MemoryNetwork(latency_s=latency_s)

    def member(i: int, bootstrap: tuple[str, ...]) -> AbstractAsyncContextManager[Node]:
        return memory_node(
            network,
            tmp_path / str(i),
            bootstrap,
            backends[i],
            identity=seeded_identity(seed, i),
            rng=random.Random(seed + i),
            **config,
        )

    async with open_swarm(len(backends), member) as nodes:
        yield nodes


class MemorySwarmFactory(Protocol):
    """The `memory_swarm_factory` fixture: `memory_swarm` in a fresh directory each call."""

    def __call__(
        self,
        backends: Sequence[Backend],
        *,
        seed: int = 0,
        latency_s: float = DEFAULT_LATENCY_S,
        **config: Any,
    ) -> AbstractAsyncContextManager[list[Node]]: ...
