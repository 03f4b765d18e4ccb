"""Two nodes on one network segment of the NAT lab find each other with no bootstrap: mDNS."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from dmoa_p2p.config import control_socket_path
from dmoa_p2p.control import call_control
from dmoa_p2p.testing.labnodes import answering, peers_of, start_node, wait_status
from dmoa_p2p.testing.netlab import NatLab
from tests.netns.test_lab import JOIN_S, START_S

pytestmark = pytest.mark.netns

ANNOUNCED_S = 30.0  # a first DHT peer, identified, then the record; retries at 2, 4, 8 s


async def test_nodes_on_one_lan_find_each_other_through_mdns_and_the_dht_names_them(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    # `relay` and `pub` share the lab's "internet" bridge: one L2 segment, as a LAN is
    nodes = [start_node(nat_lab, host, tmp_path) for host in ("relay", "pub")]
    for node in nodes:
        await wait_status(node, answering, START_S)
    start = time.monotonic()
    a, b = nodes
    await wait_status(a, lambda s: b.peer_id in peers_of(s), JOIN_S)
    await wait_status(b, lambda s: a.peer_id in peers_of(s), JOIN_S)
    print(f"each in the other's peer view {time.monotonic() - start:.1f} s after both started")
    status = await call_control(control_socket_path(b.data_dir), "status")
    assert status["connected_peers"] == [a.peer_id]  # dialled by address, no bootstrap given

    # both public (lab addresses are routed ones): DHT servers, each announcing model "fake"
    with trio.fail_after(ANNOUNCED_S):
        while not await named_by_dht(b.data_dir, a.peer_id):  # noqa: ASYNC110
            await trio.sleep(1.0)  # another process's state: polled
    print(f"named by the DHT {time.monotonic() - start:.1f} s after both started")


async def named_by_dht(seeker: Path, provider: str) -> bool:
    answer = await call_control(control_socket_path(seeker), "providers")
    return any(e["peer_id"] == provider and e["via"] == "dht" for e in answer["providers"])
