"""The NAT lab behaves like the internet it models: real nodes and TCP probes in its namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from dmoa_p2p.testing.labnodes import (
    PORT,
    LabNode,
    answering,
    peers_of,
    start_node,
    wait_status,
)
from dmoa_p2p.testing.netlab import HOSTS, MARK, NatKind, NatLab, command, lab_namespaces, open_lab

pytestmark = pytest.mark.netns

PROBE = str(Path(__file__).with_name("probe.py"))
HOMES = {"peer1": "nat1", "peer2": "nat2"}  # home host: its router
# Node tests run two homes at once, so that two labs cover the three kinds. A resetting router
# forwards like a port-preserving one (it differs only in what it answers itself), so outbound
# connections are shown on the first pair only.
PAIRS = [(NatKind.PORT_PRESERVING, NatKind.SYMMETRIC), (NatKind.RESET, NatKind.RESET)]
PAIR_IDS = ["port_preserving+symmetric", "reset"]
START_S = 20.0  # a node process starts in 1-3 s on 2 busy cores
JOIN_S = 20.0  # connect, then one presence each way (every 2 s)
# the node gives up on a silent address after 10 s (overlay CONNECT_TIMEOUT_S), then says so
UNREACHABLE_S = 20.0


async def wait_said(node: LabNode, words: str, timeout_s: float) -> str:
    """The first line of the node's log holding `words`; fails if none comes in time."""
    with trio.move_on_after(timeout_s):
        while True:
            for line in node.said().splitlines():
                if words in line:
                    return line
            await trio.sleep(0.1)
    pytest.fail(f"{node.host} did not say {words!r} within {timeout_s:g} s; log:\n{node.said()}")


async def probe(lab: NatLab, host: str, target: str, port: int, **options: Any) -> dict[str, Any]:
    """One TCP connect from inside `host`; see probe.py for what it reports."""
    argv = [sys.executable, PROBE, "connect", target, str(port)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    result: dict[str, Any] = json.loads(await lab.output(host, argv))
    return result


async def serve_probe(lab: NatLab, host: str, port: int, base: Path) -> None:
    """A probe server in `host` telling callers where they came from; returns once it listens."""
    log = base / f"serve-{host}-{port}.log"
    lab.run(host, [sys.executable, PROBE, "serve", lab.ip(host), str(port)], log=log)
    with trio.fail_after(START_S):
        while not (log.exists() and "listening" in log.read_text()):  # noqa: ASYNC110
            await trio.sleep(0.05)  # another process's output: nothing to wait on but the file


@pytest.mark.parametrize("nat_lab", PAIRS[:1], indirect=True, ids=PAIR_IDS[:1])
async def test_nodes_behind_nat_join_a_public_node_through_their_routers(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    relay = start_node(nat_lab, "relay", tmp_path)
    await wait_status(relay, answering, START_S)
    homes = [start_node(nat_lab, peer, tmp_path, bootstrap=[relay.address()]) for peer in HOMES]
    for home in homes:
        await wait_status(home, lambda s: relay.peer_id in peers_of(s), JOIN_S)
    everyone = {home.peer_id for home in homes}
    await wait_status(relay, lambda s: everyone <= peers_of(s), JOIN_S)
    for home, router in zip(homes, HOMES.values(), strict=True):
        # the relay was reached from the router's WAN address, not from the home address
        flows = await nat_lab.output(router, ["conntrack", "-L", "-p", "tcp", "--dport", str(PORT)])
        assert any(
            f"src={home.ip} dst={relay.ip} " in flow
            and f"dst={nat_lab.ip(router)} " in flow
            and "ESTABLISHED" in flow
            for flow in flows.splitlines()
        ), (router, flows)


@pytest.mark.parametrize("nat_lab", PAIRS, indirect=True, ids=PAIR_IDS)
async def test_a_public_node_cannot_dial_nodes_behind_nat(nat_lab: NatLab, tmp_path: Path) -> None:
    homes = [start_node(nat_lab, peer, tmp_path) for peer in HOMES]
    for home in homes:
        await wait_status(home, answering, START_S)
    # the addresses the internet sees the home nodes at: their routers'
    routers = HOMES.values()
    targets = [home.address(nat_lab.ip(r)) for home, r in zip(homes, routers, strict=True)]
    public = start_node(nat_lab, "pub", tmp_path, bootstrap=targets)
    for target, router in zip(targets, routers, strict=True):
        said = await wait_said(public, f"{target} is unreachable", START_S + UNREACHABLE_S)
        reset = nat_lab.nat_kinds[router] is NatKind.RESET
        assert ("Connection refused" if reset else "no answer within") in said, said
    for node in (public, *homes):
        status = await wait_status(node, answering, START_S)
        assert status["connected_peers"] == [], (node.host, status["connected_peers"])


@pytest.mark.parametrize("nat_lab", list(NatKind), indirect=True)
async def test_unsolicited_connects_from_the_internet_are_dropped_or_reset(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    kind = nat_lab.nat_kinds["nat1"]
    home, router = nat_lab.ip("peer1"), nat_lab.ip("nat1")
    await serve_probe(nat_lab, "peer1", PORT, tmp_path)
    # one who knows the home address and routes it to the router still meets the firewall
    await nat_lab.output("pub", ["ip", "route", "add", f"{home}/32", "via", router])
    results: dict[str, dict[str, Any]] = {}

    async def connect(name: str, host: str, target: str) -> None:
        # a reset comes back in milliseconds; a second of silence means dropped
        results[name] = await probe(nat_lab, host, target, PORT, timeout=1.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connect, "router", "pub", router)
        nursery.start_soon(connect, "home", "pub", home)
        nursery.start_soon(connect, "from the router", "nat1", home)
    if kind is NatKind.RESET:
        assert results["router"]["outcome"] == "refused", results
        assert results["router"]["elapsed_s"] < 0.5, results
    else:
        assert results["router"]["outcome"] == "timeout", results
    assert results["home"]["outcome"] == "timeout", results
    # the home listener is there: only the firewall keeps the internet out
    assert results["from the router"]["outcome"] == "connected", results


@pytest.mark.parametrize("nat_lab", list(NatKind), indirect=True)
async def test_the_router_maps_home_connections_to_its_wan_address(
    nat_lab: NatLab, tmp_path: Path
) -> None:
    kind, from_port = nat_lab.nat_kinds["nat1"], 40000
    for host in ("relay", "pub"):
        await serve_probe(nat_lab, host, 7000, tmp_path)
    seen = [
        await probe(nat_lab, "peer1", nat_lab.ip(host), 7000, from_port=from_port)
        for host in ("relay", "pub")
    ]
    assert {s["observed"].split(":")[0] for s in seen} == {nat_lab.ip("nat1")}, seen
    ports = [int(s["observed"].split(":")[1]) for s in seen]
    if kind is NatKind.SYMMETRIC:
        # a fresh random port per connection: what DCUtR cannot predict
        assert ports != [from_port, from_port], seen
    else:
        # the same port towards every peer: the mapping TCP hole punching relies on
        assert ports == [from_port, from_port], seen


def test_a_lab_removes_itself_and_a_dead_runs_leftovers_but_not_a_live_lab() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid names an owner that no longer runs
    leftover = f"{MARK}{gone.pid}-beef-peer1"
    command(["ip", "netns", "add", leftover])
    with open_lab() as first:
        assert leftover not in lab_namespaces()
        sleeper = first.run("peer1", ["sleep", "60"])
        with open_lab() as second:
            ours = [name for name in lab_namespaces() if name.startswith(first.prefix)]
            assert len(ours) == len(HOSTS), ours  # the second lab left the first one alone
        assert not any(name.startswith(second.prefix) for name in lab_namespaces())
    assert not any(name.startswith(first.prefix) for name in lab_namespaces())
    assert sleeper.returncode is not None
