"""Helpers for unit tests: nodes with the fake backend on the in-memory overlay."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import trio

from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.config import NodeConfig
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import Node, open_node
from dmoa_p2p.overlay import MemoryNetwork, Overlay

EPOCH = 1.8e9  # wall clock seen by message gates: virtual time plus a fixed epoch


def wall_clock() -> float:
    return EPOCH + trio.current_time()


async def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling other tasks' state is the point
            await trio.sleep(0.1)


@contextlib.asynccontextmanager
async def memory_node(
    network: MemoryNetwork,
    data_dir: Path,
    bootstrap: Sequence[str] = (),
    backend: FakeBackend | None = None,
    **config: Any,
) -> AsyncIterator[Node]:
    def opener(identity: NodeIdentity, _: Sequence[str]) -> AbstractAsyncContextManager[Overlay]:
        return network.open_overlay(identity)

    settings = NodeConfig(
        data_dir=data_dir, bootstrap=tuple(bootstrap), presence_interval_s=1.0, **config
    )
    async with open_node(
        settings,
        overlay_opener=opener,
        backend=backend or FakeBackend(),
        control=False,
        wall_clock=wall_clock,
    ) as node:
        yield node


@contextlib.asynccontextmanager
async def memory_swarm(
    tmp_path: Path, backends: Sequence[FakeBackend], **config: Any
) -> AsyncIterator[list[Node]]:
    """len(backends) nodes bootstrapped from the first; yields once every view is complete."""
    network = MemoryNetwork(latency_s=0.005)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            memory_node(network, tmp_path / "0", backend=backends[0], **config)
        )
        nodes = [first]
        for i, backend in enumerate(backends[1:], start=1):
            nodes.append(
                await stack.enter_async_context(
                    memory_node(network, tmp_path / str(i), first.listen_addrs, backend, **config)
                )
            )
        everyone = {n.peer_id for n in nodes}
        await wait_for(lambda: all(n.live_peer_ids() == everyone - {n.peer_id} for n in nodes))
        yield nodes
