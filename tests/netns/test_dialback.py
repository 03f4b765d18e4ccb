"""Nodes learn whether the internet can dial them by asking peers to dial back, in the NAT lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dmoa_p2p.testing.labnodes import LabNode, answering, start_node, wait_status
from dmoa_p2p.testing.netlab import NatKind, NatLab
from tests.netns.test_lab import JOIN_S, START_S

pytestmark = pytest.mark.netns

# Routers that reset unsolicited connections rather than drop them accept connections to
# themselves: a node on router nat1 is a second public peer to ask (the lab has two public
# hosts only, and `pub` is the one under test).
RESETTING = [NatKind.RESET]
# join, identify, then a check: up to 3 s per dial-back that meets a firewall's silence
CHECKED_S = JOIN_S + 10.0
RESERVED_S = 10.0  # a reservation is sought once a second after the verdict


def decided(status: dict[str, Any]) -> bool:
    return bool(status["reachability"]["source"] == "dial-back")


async def start_peers(lab: NatLab, base: Path) -> list[LabNode]:
    """The relay and a second public node (on router nat1), each up."""
    peers = [start_node(lab, "relay", base), start_node(lab, "nat1", base)]
    for peer in peers:
        await wait_status(peer, answering, START_S)
    return peers


@pytest.mark.parametrize("nat_lab", RESETTING, indirect=True)
async def test_a_firewalled_public_address_and_a_home_node_are_found_private(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    relay, other = await start_peers(nat_lab, tmp_path)
    nat_lab.firewall("pub")
    bootstrap = [relay.address(), other.address()]
    pub = start_node(nat_lab, "pub", tmp_path, bootstrap)
    home = start_node(nat_lab, "peer2", tmp_path, bootstrap)
    # its public address looks reachable: it starts out relaying, as the guess says
    first = await wait_status(pub, answering, START_S)
    assert first["reachability"]["source"] in ("guess", "dial-back"), first["reachability"]
    status = await wait_status(pub, decided, CHECKED_S)
    reach = status["reachability"]
    assert (reach["public"], reach["relaying"], reach["confirmed_by"]) == (False, False, 0), reach
    assert reach["failed_by"] >= 2, reach
    # so it reserves on the relays and names the way in through them
    status = await wait_status(
        pub, lambda s: relay.address() in s["reachability"]["relays"], RESERVED_S
    )
    circuit = f"{relay.address()}/p2p-circuit/p2p/{pub.peer_id}"
    assert circuit in status["listen_addrs"], status["listen_addrs"]
    # the home node names its home address, which no one outside can dial
    status = await wait_status(home, decided, CHECKED_S)
    reach = status["reachability"]
    assert (reach["public"], reach["confirmed_by"]) == (False, 0), reach
    assert reach["failed_by"] >= 2, reach
    # the relay itself was confirmed by them: their dials out reach it
    status = await wait_status(relay, decided, CHECKED_S)
    assert status["reachability"]["public"] and status["reachability"]["relaying"], status


@pytest.mark.parametrize("nat_lab", RESETTING, indirect=True)
async def test_an_unfirewalled_public_node_is_confirmed_public(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    relay, other = await start_peers(nat_lab, tmp_path)
    pub = start_node(nat_lab, "pub", tmp_path, [relay.address(), other.address()])
    status = await wait_status(pub, decided, START_S + CHECKED_S)
    reach = status["reachability"]
    assert (reach["public"], reach["relaying"], reach["relays"]) == (True, True, []), reach
    assert (reach["confirmed_by"], reach["failed_by"]) == (2, 0), reach
    assert status["listen_addrs"] == [pub.address()]
