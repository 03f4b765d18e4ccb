"""The testing kit as pytest fixtures: `pytest_plugins = ["dmoa_p2p.testing.fixtures"]` loads it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from dmoa_p2p.backends import Backend
from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.node import Node
from dmoa_p2p.overlay import MemoryNetwork
from dmoa_p2p.swarm import InProcessSwarm
from dmoa_p2p.testing._libp2p import DEFAULT_CONVERGE_S, Libp2pSwarmFactory, libp2p_swarm
from dmoa_p2p.testing._memory import (
    DEFAULT_LATENCY_S,
    MemorySwarmFactory,
    memory_swarm,
)


@pytest.fixture
def memory_network() -> MemoryNetwork:
    """An empty in-memory network with the kit's default latency."""
    return MemoryNetwork(latency_s=DEFAULT_LATENCY_S)


@pytest.fixture
def fake_backend() -> FakeBackend:
    """The fake backend with its defaults: fixed 0.2 s service times."""
    return FakeBackend()


@pytest.fixture
def memory_swarm_factory(tmp_path: Path) -> MemorySwarmFactory:
    """`memory_swarm(backends, ...)`, each call in its own directory under `tmp_path`."""
    calls = itertools.count()

    def factory(
        backends: Sequence[Backend],
        *,
        seed: int = 0,
        latency_s: float = DEFAULT_LATENCY_S,
        **config: Any,
    ) -> AbstractAsyncContextManager[list[Node]]:
        directory = tmp_path / f"memory-swarm-{next(calls)}"
        return memory_swarm(directory, backends, seed=seed, latency_s=latency_s, **config)

    return factory


@pytest.fixture
def libp2p_swarm_factory(tmp_path: Path) -> Libp2pSwarmFactory:
    """`libp2p_swarm(n, ...)`, each call in its own directory under `tmp_path`."""
    calls = itertools.count()

    def factory(
        n: int, *, timeout_s: float = DEFAULT_CONVERGE_S, **config: Any
    ) -> AbstractAsyncContextManager[InProcessSwarm]:
        directory = tmp_path / f"swarm-{next(calls)}"
        return libp2p_swarm(n, directory, timeout_s=timeout_s, **config)

    return factory
