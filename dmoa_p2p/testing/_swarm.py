"""Swarms of nodes started one after another, each bootstrapping from an earlier one."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager

import attrs
import trio

from dmoa_p2p.node import Node
from dmoa_p2p.swarm import dial_addr, views_converged
from dmoa_p2p.testing._time import wait_for

# opens node i, given the addresses to bootstrap from (none for the first)
MemberOpener = Callable[[int, tuple[str, ...]], AbstractAsyncContextManager[Node]]


def converged(nodes: Collection[Node], *, short_allowed: int = 0) -> bool:
    """`swarm.views_converged` for running nodes: in a swarm of up to 9, every node holds
    every other."""
    views = {n.peer_id: n.live_peer_ids() for n in nodes}
    return views_converged(views, short_allowed=short_allowed)


@contextlib.asynccontextmanager
async def open_swarm(
    count: int,
    open_member: MemberOpener,
    *,
    timeout_s: float = 30.0,
    poll_s: float = 0.1,
    spread: random.Random | None = None,
    short_allowed: int = 0,
) -> AsyncIterator[list[Node]]:
    """`count` nodes, node 0 everyone's bootstrap (with `spread`: each a random earlier
    node's, as newcomers to a large swarm would, so that no node takes a thousand
    newcomers in their first rounds); yields once the views `converged` (`short_allowed`
    nodes may hold fewer peers than the rest).

    trio.TooSlowError if the views are not complete after `timeout_s` (checked every
    `poll_s`); the nodes stop, last first, when the block ends.

    Each node runs in its own task. Entered one inside the other, a thousand nodes nested
    their cancel scopes a thousand deep, and a run of them that ended in an error made
    trio's clean-up walk that chain past the recursion limit (TrioInternalError).
    """
    members: list[_Member] = []
    try:
        async with trio.open_nursery() as nursery:
            for i in range(count):
                contact = spread.randrange(i) if spread is not None and i else 0
                bootstrap = (dial_addr(members[contact].node.listen_addrs),) if members else ()
                members.append(await nursery.start(_run_member, open_member, i, bootstrap))
            nodes = [member.node for member in members]
            try:
                await wait_for(
                    lambda: converged(nodes, short_allowed=short_allowed), timeout_s, poll_s=poll_s
                )
                yield nodes
            finally:
                for member in reversed(members):
                    member.scope.cancel()
                    await member.stopped.wait()
    except BaseExceptionGroup as group:
        # the block's own error, or the wait's, as it was raised: not in a group of one
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@attrs.frozen
class _Member:
    node: Node
    scope: trio.CancelScope
    stopped: trio.Event


async def _run_member(
    open_member: MemberOpener,
    index: int,
    bootstrap: tuple[str, ...],
    *,
    task_status: trio.TaskStatus[_Member] = trio.TASK_STATUS_IGNORED,
) -> None:
    stopped = trio.Event()
    try:
        with trio.CancelScope() as scope:
            async with open_member(index, bootstrap) as node:
                task_status.started(_Member(node, scope, stopped))
                await trio.sleep_forever()
    finally:
        stopped.set()
