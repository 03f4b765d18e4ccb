"""Real start-up on 127.0.0.1: a taken TCP port or an impossible bootstrap address is refused."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from dmoa_p2p.config import NodeConfig
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import open_node
from dmoa_p2p.overlay import BadAddress, OverlayError, PortInUse, open_libp2p_overlay
from dmoa_p2p.testing import free_tcp_port

pytestmark = pytest.mark.integration
PEER = NodeIdentity.generate().peer_id


async def test_a_second_node_on_a_taken_port_refuses_to_start() -> None:
    listen = [f"/ip4/127.0.0.1/tcp/{free_tcp_port()}"]
    async with open_libp2p_overlay(NodeIdentity.generate(), listen) as first:
        with pytest.raises(PortInUse, match=f"cannot listen on {listen[0]}: TCP port") as caught:
            async with open_libp2p_overlay(NodeIdentity.generate(), listen):
                pass
        assert "\n" not in str(caught.value)
        assert first.listen_addrs[0].startswith(listen[0])


async def test_a_port_any_other_program_listens_on_is_refused_too() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        with pytest.raises(PortInUse, match="already in use"):
            async with open_libp2p_overlay(NodeIdentity.generate(), [f"/ip4/0.0.0.0/tcp/{port}"]):
                pass


async def test_a_node_takes_its_port_back_right_after_stopping() -> None:
    listen = [f"/ip4/127.0.0.1/tcp/{free_tcp_port()}"]
    async with (
        open_libp2p_overlay(NodeIdentity.generate(), listen) as first,
        open_libp2p_overlay(NodeIdentity.generate(), ["/ip4/127.0.0.1/tcp/0"]) as peer,
    ):
        await peer.connect(first.listen_addrs[0])  # leaves sockets in TIME_WAIT
    async with open_libp2p_overlay(NodeIdentity.generate(), listen) as again:
        assert again.listen_addrs[0].startswith(listen[0])


@pytest.mark.parametrize(
    ("bootstrap", "refused_by", "says"),
    [
        ("/ip4/127.0.0.1/tcp/4001/p2p/notapeerid", "node", "'notapeerid' is not a peer id"),
        (f"/ip4/999.0.0.1/tcp/4001/p2p/{PEER}", "node", "'999.0.0.1' is not IPv4"),
        (
            f"/p2p/{PEER}",
            "config",
            f"'/p2p/{PEER}' names no host and port: expected /ip4/HOST/tcp/PORT/p2p/PEER_ID",
        ),
        (
            "/ip4/127.0.0.1/tcp/4001",
            "config",
            "'/ip4/127.0.0.1/tcp/4001' does not end with /p2p/<peer id>; "
            "expected /ip4/HOST/tcp/PORT/p2p/PEER_ID",
        ),
    ],
)
async def test_a_bootstrap_address_that_can_never_work_is_one_error_at_start(
    tmp_path: Path, bootstrap: str, refused_by: str, says: str
) -> None:
    if refused_by == "config":  # syntax alone shows it: no libp2p needed
        with pytest.raises(ValueError, match=re.escape(says)) as refused:
            NodeConfig(data_dir=tmp_path, bootstrap=(bootstrap,), backend="fake")
        assert "\n" not in str(refused.value)
        return
    config = NodeConfig(data_dir=tmp_path, bootstrap=(bootstrap,), backend="fake")
    with pytest.raises(OverlayError, match=re.escape(says)) as caught:
        async with open_node(config):
            pass
    assert isinstance(caught.value, BadAddress)
    assert "\n" not in str(caught.value)


async def test_a_node_on_every_interface_names_each_address_never_the_wildcard() -> None:
    port = free_tcp_port()
    async with (
        open_libp2p_overlay(NodeIdentity.generate(), [f"/ip4/0.0.0.0/tcp/{port}"]) as node,
        open_libp2p_overlay(NodeIdentity.generate(), ["/ip4/127.0.0.1/tcp/0"]) as peer,
    ):
        assert node.listen_addrs and not any("/0.0.0.0/" in a for a in node.listen_addrs)
        loopback = f"/ip4/127.0.0.1/tcp/{port}/p2p/{node.peer_id}"
        assert node.listen_addrs[-1] == loopback  # last: it reaches only this machine
        await peer.connect(loopback)  # an address it names is one it is reached at
        assert node.peer_id in peer.connected_peers()
