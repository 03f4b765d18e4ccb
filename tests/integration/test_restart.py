"""Real py-libp2p nodes on 127.0.0.1: a restarted bootstrap node and its peers find each other."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from dmoa_p2p.config import NodeConfig
from dmoa_p2p.node import Node, open_node
from dmoa_p2p.node._dialer import MAX_BOOTSTRAP_BACKOFF_S
from dmoa_p2p.node._known_peers import KNOWN_PEERS_FILE

pytestmark = pytest.mark.integration
REJOIN_S = 3.0  # beyond the dial itself: a connection, identify, a presence round


def unused_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling other tasks' state is the point
            await trio.sleep(0.05)


def config(data_dir: Path, listen: str, bootstrap: tuple[str, ...] = ()) -> NodeConfig:
    return NodeConfig(
        data_dir=data_dir,
        listen_addrs=(listen,),
        bootstrap=bootstrap,
        backend="fake",
        presence_interval_s=1.0,
    )


@pytest.mark.parametrize("remembers", [True, False], ids=["remembered", "forgotten"])
async def test_a_restarted_bootstrap_node_and_its_peer_see_each_other_within_seconds(
    tmp_path: Path, remembers: bool
) -> None:
    """a dials the peers it remembers as it starts; had it forgotten them, b's redial of its
    bootstrap (backoff capped at MAX_BOOTSTRAP_BACKOFF_S) finds it a few seconds later."""
    a_listen = f"/ip4/127.0.0.1/tcp/{unused_local_port()}"
    a_config = config(tmp_path / "a", a_listen)
    stop_a, a_stopped = trio.CancelScope(), trio.Event()

    async def run_a(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        with stop_a:
            async with open_node(a_config) as node:
                task_status.started(node)
                await trio.sleep_forever()
        a_stopped.set()

    async with trio.open_nursery() as nursery:
        a: Node = await nursery.start(run_a)
        a_id = a.peer_id
        b_config = config(tmp_path / "b", "/ip4/127.0.0.1/tcp/0", (a.listen_addrs[0],))
        async with open_node(b_config) as b:
            await wait_for(lambda: a.live_peer_ids() == {b.peer_id}, 20)
            await wait_for(lambda: b.live_peer_ids() == {a_id}, 20)
            await trio.sleep(1.5)  # one presence round more: a remembers b
            stop_a.cancel()
            await a_stopped.wait()
            known = tmp_path / "a" / KNOWN_PEERS_FILE
            assert b.peer_id in known.read_text()
            if not remembers:
                known.unlink()
            await wait_for(lambda: a_id not in b.overlay.connected_peers(), 10)
            await trio.sleep(8)  # b's redial backoff reaches its cap; its dials failed
            async with open_node(a_config) as a_again:  # same port, same data directory
                started = trio.current_time()
                await wait_for(lambda: b.peer_id in a_again.live_peer_ids(), 30)
                await wait_for(lambda: b.overlay.connected_peers() >= {a_id}, 30)
                await wait_for(lambda: a_id in b.live_peer_ids(), 30)
                took = trio.current_time() - started
                print(f"rejoined in {took:.2f} s")
                assert took < (1.0 if remembers else MAX_BOOTSTRAP_BACKOFF_S) + REJOIN_S
        nursery.cancel_scope.cancel()
