"""The NAT lab behaves like the internet it models: real nodes and TCP probes in its namespaces."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from dmoa_p2p.config import control_socket_path
from dmoa_p2p.control import ControlError, call_control
from dmoa_p2p.identity import KEY_FILE_NAME, NodeIdentity, save_identity
from dmoa_p2p.testing.netlab import HOSTS, MARK, NatKind, NatLab, command, lab_namespaces, open_lab

pytestmark = pytest.mark.netns

PORT = 4001
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


@attrs.frozen
class LabNode:
    """A `dmoa-p2p node` process on one lab host."""

    host: str
    ip: str
    data_dir: Path
    peer_id: str
    process: subprocess.Popen[bytes]
    log: Path

    def address(self, ip: str | None = None) -> str:
        """Its dial address, at its own IP or at `ip` (its router's, as the internet sees it)."""
        return f"/ip4/{ip or self.ip}/tcp/{PORT}/p2p/{self.peer_id}"

    def said(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_node(
    lab: NatLab, host: str, base: Path, bootstrap: Sequence[str] = (), listen_ip: str | None = None
) -> LabNode:
    """Start a node with the fake backend inside `host`, listening on its lab address (or on
    `listen_ip`, e.g. 0.0.0.0)."""
    data_dir = base / host
    identity = NodeIdentity.generate()  # made here, so its peer id is known before it starts
    save_identity(identity, data_dir / KEY_FILE_NAME)
    listen = f"/ip4/{listen_ip or lab.ip(host)}/tcp/{PORT}"
    node = ["node", "--backend", "fake", "--listen", listen, "--data-dir", str(data_dir)]
    argv = [sys.executable, "-m", "dmoa_p2p", "-q", *node]
    for addr in bootstrap:
        argv += ["--bootstrap", addr]
    # only this test's settings: none from the environment of whoever runs the tests
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMOA_P2P_")}
    log = base / f"{host}.log"
    process = lab.run(host, argv, log=log, env=env)
    return LabNode(host, lab.ip(host), data_dir, identity.peer_id, process, log)


async def wait_status(
    node: LabNode, condition: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    """The node's status once `condition` holds; fails, with the node's log, if it exits or
    `timeout_s` passes first."""
    path = control_socket_path(node.data_dir)
    try:
        with trio.fail_after(timeout_s):
            while node.process.poll() is None:
                with contextlib.suppress(ControlError):  # not answering yet: starting
                    status = await call_control(path, "status")
                    if condition(status):
                        return status
                await trio.sleep(0.1)
    except trio.TooSlowError:
        pytest.fail(f"{node.host}: condition not met within {timeout_s:g} s; log:\n{node.said()}")
    pytest.fail(f"{node.host}: node exited with {node.process.returncode}; log:\n{node.said()}")


async def wait_said(node: LabNode, words: str, timeout_s: float) -> str:
    """The first line of the node's log holding `words`; fails if none comes in time."""
    with trio.move_on_after(timeout_s):
        while True:
            for line in node.said().splitlines():
                if words in line:
                    return line
            await trio.sleep(0.1)
    pytest.fail(f"{node.host} did not say {words!r} within {timeout_s:g} s; log:\n{node.said()}")


def answering(status: dict[str, Any]) -> bool:
    """Any status will do: the node is up."""
    return True


def peers_of(status: dict[str, Any]) -> set[str]:
    return {peer["peer_id"] for peer in status["peers"]}


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
