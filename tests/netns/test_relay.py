"""Nodes behind two NAT routers work together through a public relay node, in the NAT lab."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.testing.labnodes import (
    LabNode,
    answering,
    ask,
    link_to,
    peers_of,
    start_node,
    wait_status,
)
from dmoa_p2p.testing.netlab import NatLab
from tests.netns.test_lab import HOMES, JOIN_S, PAIR_IDS, PAIRS, START_S

pytestmark = pytest.mark.netns

# a reservation is tried once a second after the relay is reached and identified
RESERVED_S = JOIN_S
# records through the relay's shuffles name the circuit address, then a node can dial it
RELAYED_S = 30.0
ASK_S = 30.0  # a one-layer query on the fake backend, over a circuit


def circuit(relay: LabNode, node: LabNode) -> str:
    return f"{relay.address()}/p2p-circuit/p2p/{node.peer_id}"


def sees(peer_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: peer_id in peers_of(status)


def names(address: str) -> Callable[[dict[str, Any]], bool]:
    """The node's own listen addresses are `address` alone."""
    return lambda status: status["listen_addrs"] == [address]


def how_reached(status: dict[str, Any]) -> tuple[bool, bool, list[str]]:
    """Public, relaying, and through which relays (how it was decided aside)."""
    reach = status["reachability"]
    return reach["public"], reach["relaying"], reach["relays"]


def addrs_of(status: dict[str, Any], peer_id: str) -> list[str]:
    return next((p["listen_addrs"] for p in status["peers"] if p["peer_id"] == peer_id), [])


@pytest.mark.parametrize("nat_lab", PAIRS, indirect=True, ids=PAIR_IDS)
async def test_nodes_behind_two_nats_answer_each_others_queries_through_a_relay(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    relay = start_node(nat_lab, "relay", tmp_path)
    await wait_status(relay, answering, START_S)
    peer1, peer2 = (start_node(nat_lab, home, tmp_path, [relay.address()]) for home in HOMES)
    through_relay = {home.peer_id: [circuit(relay, home)] for home in (peer1, peer2)}
    for home in (peer1, peer2):
        # its home address reaches no one: it names the way in through the relay instead
        await wait_status(
            home, lambda s: s["listen_addrs"] == through_relay[s["peer_id"]], RESERVED_S
        )
    relay_status = await wait_status(relay, answering, START_S)
    assert how_reached(relay_status) == (True, True, [])
    # peer2's first records, signed before its reservation, name no address; each new one
    # (every 0.5 s) names the circuit
    circuit_of_2 = through_relay[peer2.peer_id]
    status = await wait_status(
        peer1, lambda s: addrs_of(s, peer2.peer_id) == circuit_of_2, RELAYED_S
    )
    assert how_reached(status) == (False, False, [relay.address()])
    await wait_status(peer2, lambda s: peer1.peer_id in peers_of(s), RELAYED_S)
    # each dials the other through the relay as a neighbour; a task sent while both dial
    # at once (on a loaded machine) once found no connection, a rare race of that moment
    await wait_status(peer1, lambda s: link_to(s, peer2.peer_id) is not None, RELAYED_S)
    request = QueryRequest("Who is behind the other router?", layers=1, proposers=2)
    answer = await ask(peer1, request, ASK_S)
    by_node = {call["node"] for call in answer["trace"]["calls"]}
    assert {peer1.peer_id, peer2.peer_id, relay.peer_id} <= by_node, answer["trace"]["layers"]


@pytest.mark.parametrize("nat_lab", PAIRS[:1], indirect=True, ids=PAIR_IDS[:1])
async def test_nodes_listening_on_every_interface_behind_nat_know_they_need_the_relay(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    relay = start_node(nat_lab, "relay", tmp_path)
    await wait_status(relay, answering, START_S)
    # 0.0.0.0: only their interfaces' addresses (10.x and loopback) say they are behind NAT
    homes = [start_node(nat_lab, h, tmp_path, [relay.address()], "0.0.0.0") for h in HOMES]
    for home, other in (homes, homes[::-1]):
        # it may hear of the other (through the relay's shuffles) before its reservation
        status = await wait_status(home, names(circuit(relay, home)), RELAYED_S)
        assert status["reachability"]["relays"] == [relay.address()]
        await wait_status(home, sees(other.peer_id), RELAYED_S)
