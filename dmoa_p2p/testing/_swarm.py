"""Swarms of nodes started one after another, each bootstrapping from an earlier one."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager

from dmoa_p2p.node import Node
from dmoa_p2p.swarm import dial_addr, views_converged
from dmoa_p2p.testing._time import wait_for

# opens node i, given the addresses to bootstrap from (none for the first)
MemberOpener = Callable[[int, tuple[str, ...]], AbstractAsyncContextManager[Node]]


def converged(nodes: Collection[Node]) -> bool:
    """`swarm.views_converged` for running nodes: in a swarm of up to 9, every node holds
    every other."""
    return views_converged({n.peer_id: n.live_peer_ids() for n in nodes})


@contextlib.asynccontextmanager
async def open_swarm(
    count: int,
    open_member: MemberOpener,
    *,
    timeout_s: float = 30.0,
    poll_s: float = 0.1,
    spread: random.Random | None = None,
) -> AsyncIterator[list[Node]]:
    """`count` nodes, node 0 everyone's bootstrap (with `spread`: each a random earlier
    node's, as newcomers to a large swarm would, so that no node takes a thousand
    newcomers in their first rounds); yields once the views `converged`.

    trio.TooSlowError if the views are not complete after `timeout_s` (checked every
    `poll_s`); the nodes stop, last first, when the block ends.
    """
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i in range(count):
            contact = spread.randrange(i) if spread is not None and i else 0
            bootstrap = (dial_addr(nodes[contact].listen_addrs),) if nodes else ()
            nodes.append(await stack.enter_async_context(open_member(i, bootstrap)))
        await wait_for(lambda: converged(nodes), timeout_s, poll_s=poll_s)
        yield nodes
