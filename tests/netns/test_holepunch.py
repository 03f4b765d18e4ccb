"""Nodes behind two NAT routers punch a direct link where the NATs allow it, in the NAT lab,
and keep gossiping across the relayed connection's close."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.testing.labnodes import LabNode, answering, ask, link_to, start_node, wait_status
from dmoa_p2p.testing.netlab import NatKind, NatLab
from tests.netns.test_lab import HOMES, PAIR_IDS, PAIRS, START_S
from tests.netns.test_relay import ASK_S, RELAYED_S, sees

pytestmark = pytest.mark.netns

# DCUtR looks at relayed connections every 2 s; a punch through port-preserving NAT takes ~2 s
PUNCHED_S = 15.0
# py-libp2p's DCUtR closes the relayed connection 60 s after a punch (RELAY_CLOSE_GRACE_PERIOD)
WATCHED_S = 120.0
# a record is re-signed every 0.5 s and a neighbour's own comes with each of its shuffles
STALE_S = 7.0


def seen_ago(status: dict[str, Any], peer_id: str) -> float:
    return next((p["last_seen_s"] for p in status["peers"] if p["peer_id"] == peer_id), 1e9)


async def two_homes(lab: NatLab, base: Path) -> tuple[LabNode, LabNode]:
    """A node behind each router, once each sees the other through the relay."""
    relay = start_node(lab, "relay", base)
    await wait_status(relay, answering, START_S)
    peer1, peer2 = (start_node(lab, home, base, [relay.address()]) for home in HOMES)
    await wait_status(peer1, sees(peer2.peer_id), RELAYED_S)
    await wait_status(peer2, sees(peer1.peer_id), RELAYED_S)
    return peer1, peer2


async def ask_through(asker: LabNode, proposer: LabNode) -> None:
    """A one-layer query from `asker` is answered, `proposer` among those who proposed."""
    request = QueryRequest("Who is behind the other router?", layers=1, proposers=2)
    answer = await ask(asker, request, ASK_S)
    assert proposer.peer_id in {call["node"] for call in answer["trace"]["calls"]}, answer


@pytest.mark.parametrize("nat_lab", [NatKind.PORT_PRESERVING], indirect=True)
async def test_two_port_preserving_nats_get_a_direct_link_and_keep_gossiping_after_the_relay(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    peer1, peer2 = await two_homes(nat_lab, tmp_path)
    await wait_status(peer1, lambda s: link_to(s, peer2.peer_id) == "direct", PUNCHED_S)
    await ask_through(peer1, peer2)
    # presence keeps coming both ways for two minutes, across the relayed connection's close
    with trio.fail_after(WATCHED_S + 30):
        start = trio.current_time()
        while trio.current_time() - start < WATCHED_S:
            for node, other in ((peer1, peer2), (peer2, peer1)):
                status = await wait_status(node, answering, START_S)
                assert seen_ago(status, other.peer_id) < STALE_S, status["peers"]
                assert link_to(status, other.peer_id) == "direct"
            await trio.sleep(1.0)
    await ask_through(peer2, peer1)


@pytest.mark.parametrize("nat_lab", PAIRS, indirect=True, ids=PAIR_IDS)
async def test_where_punching_cannot_work_the_link_stays_relayed_and_answers(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    peer1, peer2 = await two_homes(nat_lab, tmp_path)
    # DCUtR tries three times, 2 s apart, each dial given 2 s: past that it has given up
    await trio.sleep(PUNCHED_S)
    for node, other in ((peer1, peer2), (peer2, peer1)):
        status = await wait_status(node, answering, START_S)
        assert link_to(status, other.peer_id) == "relayed", status["peers"]
    await ask_through(peer1, peer2)
