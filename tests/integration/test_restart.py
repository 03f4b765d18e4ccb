"""Real py-libp2p nodes on 127.0.0.1: a node back on another port finds its peers by memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dmoa_p2p.config import NodeConfig
from dmoa_p2p.node import Node, open_node
from dmoa_p2p.node._dialer import MAX_BOOTSTRAP_BACKOFF_S
from dmoa_p2p.node._known_peers import KNOWN_PEERS_FILE
from dmoa_p2p.testing import free_tcp_port, wait_for

pytestmark = pytest.mark.integration
REJOIN_S = 20.0  # generous: real libp2p on shared cores; the time taken is printed


def config(data_dir: Path, port: int, bootstrap: tuple[str, ...] = ()) -> NodeConfig:
    return NodeConfig(
        data_dir=data_dir,
        listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",),
        bootstrap=bootstrap,
        backend="fake",
        presence_interval_s=1.0,
        mdns=False,  # else a and b would meet on the LAN, remembered or not
    )


@pytest.mark.parametrize("remembers", [True, False], ids=["remembered", "forgotten"])
async def test_a_node_back_on_another_port_rejoins_only_through_the_peers_it_remembers(
    tmp_path: Path, remembers: bool
) -> None:
    """b bootstraps from a. a stops and comes back on another port, so b's redials of its
    bootstrap address find nobody: only a's memory of b can bring them together again."""
    stop_a, a_stopped = trio.CancelScope(), trio.Event()

    async def run_a(*, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        with stop_a:
            async with open_node(config(tmp_path / "a", free_tcp_port())) as node:
                task_status.started(node)
                await trio.sleep_forever()
        a_stopped.set()

    async with trio.open_nursery() as nursery:
        a: Node = await nursery.start(run_a)
        a_id, (a_addr,) = a.peer_id, a.listen_addrs
        async with open_node(config(tmp_path / "b", 0, (a_addr,))) as b:
            await wait_for(lambda: a.live_peer_ids() == {b.peer_id}, 20)
            await wait_for(lambda: b.live_peer_ids() == {a_id}, 20)
            await wait_for(lambda: b.peer_id in dict(a.known_peers.peers()), 20)
            stop_a.cancel()
            await a_stopped.wait()
            known = tmp_path / "a" / KNOWN_PEERS_FILE
            assert b.peer_id in known.read_text()  # saved as a stopped
            if not remembers:
                known.unlink()
            # and back at once: b's py-libp2p may still hold a's old pubsub stream
            await wait_for(lambda: a_id not in b.overlay.connected_peers(), 10)
            async with open_node(config(tmp_path / "a", free_tcp_port())) as a_again:
                assert a_again.peer_id == a_id
                assert a_again.listen_addrs[0] != a_addr
                started = trio.current_time()
                if remembers:
                    with trio.fail_after(REJOIN_S):
                        await wait_for(lambda: b.peer_id in a_again.live_peer_ids(), REJOIN_S)
                        await wait_for(lambda: a_id in b.live_peer_ids(), REJOIN_S)
                    print(f"rejoined in {trio.current_time() - started:.2f} s")
                else:
                    # b redials the old port at least once meanwhile, to no avail
                    await trio.sleep(MAX_BOOTSTRAP_BACKOFF_S + 1)
                    assert b.peer_id not in a_again.overlay.connected_peers()
