"""Finding peers, the pure parts: provider answers checked, mDNS dial pacing, in-memory records."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dmoa_p2p.backends.fake import FakeBackend
from dmoa_p2p.cli._providers import providers_table
from dmoa_p2p.control import ControlError, call_control, serve_control
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node._providing import ANNOUNCE_EVERY_S
from dmoa_p2p.overlay import MemoryNetwork, Overlay, Provider, model_key
from dmoa_p2p.overlay._lan_peers import MAX_HEARD, HeardPeers, lan_addrs, mdns_service_type
from dmoa_p2p.overlay._providers import (
    MAX_ADDRS_PER_PROVIDER,
    check_key,
    check_limit,
    checked_providers,
    dht_key,
    usable_addr,
)
from dmoa_p2p.testing import memory_swarm, wait_for

PEERS = [NodeIdentity.from_seed(bytes([i + 1]) * 32).peer_id for i in range(8)]
A, B, C, OWN = PEERS[0], PEERS[1], PEERS[2], PEERS[7]
RSA_STYLE = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"  # a sha2-256 peer id: not ours


def tcp(port: int, peer: str | None = None) -> str:
    return f"/ip4/192.168.1.{port % 250}/tcp/{port}" + (f"/p2p/{peer}" if peer else "")


def test_each_provider_is_listed_once_with_the_addresses_every_answer_gave() -> None:
    found = [(A, [tcp(1)]), (B, [tcp(2, B)]), (A, [tcp(1), tcp(3, A)]), (B, [tcp(2)])]
    assert checked_providers(found, own_peer_id=OWN, limit=10) == [
        Provider(A, (tcp(1, A), tcp(3, A))),
        Provider(B, (tcp(2, B),)),
    ]


def test_providers_stop_at_the_limit_and_never_include_this_node() -> None:
    found = [(OWN, [tcp(9)]), *((peer, [tcp(i)]) for i, peer in enumerate(PEERS[:6]))]
    listed = checked_providers(found, own_peer_id=OWN, limit=3)
    assert [p.peer_id for p in listed] == [A, B, C]


def test_providers_whose_peer_id_is_no_ed25519_key_are_dropped() -> None:
    found = [(RSA_STYLE, [tcp(1)]), ("not a peer id", [tcp(2)]), ("", []), (A, [])]
    assert checked_providers(found, own_peer_id=OWN, limit=10) == [Provider(A, ())]


def test_a_provider_keeps_at_most_a_few_addresses() -> None:
    found = [(A, [tcp(port) for port in range(1, 100)])]
    (provider,) = checked_providers(found, own_peer_id=OWN, limit=1)
    assert len(provider.addrs) == MAX_ADDRS_PER_PROVIDER


@pytest.mark.parametrize(
    "addr",
    [
        "/ip4/0.0.0.0/tcp/4001",  # dialling the wildcard reaches oneself (trap G4)
        "/ip6/::/tcp/4001",
        f"/ip4/10.0.0.1/tcp/4001/p2p/{B}",  # another peer's address
        "/ip4/10.0.0.1/tcp/" + "1" * 300,
        "ip4/10.0.0.1/tcp/4001",
        "/ip4/10.0.0.1/tcp/4001 /x",
        "/ip4/10.0.0.1/tcp/4001\n",
    ],
)
def test_unusable_addresses_are_dropped(addr: str) -> None:
    assert usable_addr(addr, A) is None


def test_addresses_end_with_the_provider_s_id_circuit_ones_too() -> None:
    circuit = f"/ip4/198.51.100.10/tcp/4001/p2p/{B}/p2p-circuit"
    assert usable_addr(circuit, A) == f"{circuit}/p2p/{A}"
    assert usable_addr(tcp(5, A), A) == tcp(5, A)
    assert usable_addr("/dns4/node.example.org/tcp/4001", A) == (
        f"/dns4/node.example.org/tcp/4001/p2p/{A}"
    )


def test_provider_keys_and_limits_are_bounded() -> None:
    assert check_key("model/x") == "model/x"
    for bad in ("", "k" * 257, "model/\n"):
        with pytest.raises(ValueError, match="provider key"):
            check_key(bad)
    for limit in (0, 65):
        with pytest.raises(ValueError, match="limit"):
            check_limit(limit)
    assert model_key("smollm2") == "model/smollm2"


def test_dht_keys_are_sha256_multihashes_in_a_namespace_of_their_own() -> None:
    key = dht_key("model/smollm2")
    assert key[:2] == b"\x12\x20" and len(key) == 34
    assert key[2:] != hashlib.sha256(b"model/smollm2").digest()
    assert dht_key("model/smollm2") == key != dht_key("model/other")


def test_mdns_service_names_fit_dns_sd() -> None:
    assert mdns_service_type("dmoa-p2p") == "_dmoa-p2p._udp.local."
    for bad in ("", "a" * 16, "Dmoa", "-dmoa", "dmoa-", "dmoa_p2p"):
        with pytest.raises(ValueError, match="mDNS service name"):
            mdns_service_type(bad)


def test_mdns_never_dials_this_node_nor_a_peer_without_a_usable_address() -> None:
    peers = HeardPeers(OWN)
    assert not peers.heard_of("own", OWN, [tcp(1)])
    assert not peers.heard_of("wild", A, ["/ip4/0.0.0.0/tcp/4001"])
    assert not peers.heard_of("odd", "12D3KooWnotapeer", [tcp(1)])
    assert peers.due(0.0, set(), 10) == []


def test_mdns_dials_loopback_last_and_a_few_addresses_only() -> None:
    peers = HeardPeers(OWN)
    addrs = ["/ip4/127.0.0.1/tcp/1", *(tcp(port) for port in range(2, 9))]
    assert peers.heard_of("a", A, addrs)
    assert peers.addrs(A) == tuple(tcp(port, A) for port in range(2, 6))
    assert peers.heard_of("a", A, ["/ip4/127.0.0.1/tcp/1", tcp(2)])
    assert peers.addrs(A) == (tcp(2, A), f"/ip4/127.0.0.1/tcp/1/p2p/{A}")


def test_mdns_advertises_loopback_addresses_only_when_a_node_has_no_other() -> None:
    loopback = "/ip4/127.0.0.1/tcp/4001"
    assert lan_addrs([tcp(1), loopback, tcp(2)]) == [tcp(1), tcp(2)]
    assert lan_addrs([loopback]) == [loopback]
    assert len(lan_addrs([tcp(port) for port in range(1, 20)])) == 8


def test_mdns_dials_a_few_peers_at_once_and_only_those_not_connected() -> None:
    peers = HeardPeers(OWN, max_dials=2)
    for i, peer in enumerate(PEERS[:5]):
        peers.heard_of(str(i), peer, [tcp(i + 1)])
    assert peers.due(0.0, {A}, room=10) == [B, C]
    assert peers.due(0.0, {A}, room=10) == []  # both still being dialled
    peers.attempted(B, True, 0.0)
    assert peers.due(0.0, {A, B}, room=0) == []  # enough connections
    assert peers.due(0.0, {A, B}, room=10) == [PEERS[3]]


def test_mdns_retries_a_failing_peer_ever_less_often() -> None:
    peers = HeardPeers(OWN)
    peers.heard_of("a", A, [tcp(1)])
    now, waits = 0.0, []
    for _ in range(12):
        assert peers.due(now, set(), 1) == [A]
        peers.attempted(A, False, now)
        start = now
        while not peers.due(now, set(), 1):
            now += 1.0
        peers.dialling.clear()
        waits.append(now - start)
    assert waits[:4] == [2.0, 4.0, 8.0, 16.0] and max(waits) == 300.0
    peers.heard_of("a", A, [tcp(2)])  # news: due at once
    assert peers.due(now, set(), 1) == [A]


def test_mdns_forgets_withdrawn_peers_and_remembers_a_bounded_number() -> None:
    peers = HeardPeers(OWN)
    peers.heard_of("a", A, [tcp(1)])
    peers.lost("a")
    assert A not in peers
    for i in range(MAX_HEARD + 10):
        identity = NodeIdentity.from_seed(i.to_bytes(32, "big"))
        peers.heard_of(f"p{i}", identity.peer_id, [tcp(i + 1)])
    assert len(peers.due(0.0, set(), 1000)) <= MAX_HEARD


async def open_line(
    stack: contextlib.AsyncExitStack, network: MemoryNetwork, n: int
) -> list[Overlay]:
    overlays = [
        await stack.enter_async_context(network.open_overlay(NodeIdentity.generate()))
        for _ in range(n)
    ]
    for left, right in itertools.pairwise(overlays):
        await left.connect(right.listen_addrs[0])
    return overlays


async def test_in_memory_providers_are_found_through_any_chain_of_connections() -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        alone = await stack.enter_async_context(network.open_overlay(NodeIdentity.generate()))
        assert not await alone.provide("model/m")  # no peer to hold the record
        line = await open_line(stack, network, 4)
        assert await line[3].provide("model/m") and await line[2].provide("model/m")
        found = await line[0].find_providers("model/m", 10)
        assert found == [Provider(o.peer_id, o.listen_addrs) for o in (line[2], line[3])]
        assert [p.peer_id for p in await line[3].find_providers("model/m", 10)] == [
            line[2].peer_id
        ]
        assert len(await line[0].find_providers("model/m", 1)) == 1
        assert await alone.find_providers("model/m", 10) == []
        with pytest.raises(ValueError):
            await line[0].find_providers("model/m", 0)


async def test_a_node_announces_its_model_and_again_before_records_expire(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = [FakeBackend(model_name="m0"), FakeBackend(model_name="m1")]
    async with memory_swarm(tmp_path, backends) as nodes:
        await wait_for(lambda: all(node.announcer.announced == 1 for node in nodes), 10.0)
        start = trio.current_time()
        await wait_for(lambda: nodes[0].announcer.announced == 2, ANNOUNCE_EVERY_S + 10)
        assert trio.current_time() - start == pytest.approx(ANNOUNCE_EVERY_S, abs=5)
        found = await nodes[0].providers("m1", 5)
        assert found == [
            {"peer_id": nodes[1].peer_id, "addrs": list(nodes[1].listen_addrs), "via": "dht"}
        ]
        assert await nodes[0].providers("m0", 5) == []  # itself is no other peer


async def test_peers_whose_presence_names_the_model_are_listed_without_a_record(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = [FakeBackend(model_name="m0"), FakeBackend(model_name="m1")]
    async with memory_swarm(tmp_path, backends) as nodes:
        nodes[1].overlay.provides.clear()  # type: ignore[attr-defined]  # its record lapsed
        found = await nodes[0].providers("m1", 5)
        addrs = list(nodes[1].listen_addrs)
        assert found == [{"peer_id": nodes[1].peer_id, "addrs": addrs, "via": "presence"}]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory: a unix socket's path must fit in 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="dmoa-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory)


async def test_the_providers_operation_lists_peers_and_refuses_bad_requests(
    tmp_path: Path, socket_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backends = [FakeBackend(model_name="m0"), FakeBackend(model_name="m1")]
    async with memory_swarm(tmp_path, backends) as nodes, trio.open_nursery() as nursery:
        path = socket_dir / "control.sock"
        await nursery.start(serve_control, nodes[1], path, lambda: {})
        await wait_for(lambda: all(node.announcer.announced for node in nodes), 10.0)
        answer = await call_control(path, "providers", model="m0", limit=3)
        assert answer == {
            "model": "m0",
            "providers": [
                {"peer_id": nodes[0].peer_id, "addrs": list(nodes[0].listen_addrs), "via": "dht"}
            ],
        }
        assert await call_control(path, "providers") == {"model": "m1", "providers": []}
        refused: list[tuple[dict[str, Any], str]] = [
            ({"limit": 0}, "limit must be from 1 to 64"),
            ({"limit": "3"}, "an integer limit"),
            ({"model": 7}, "a model name"),
            ({"model": "m" * 300}, "provider key"),
        ]
        for bad, said in refused:
            with pytest.raises(ControlError, match=said):
                await call_control(path, "providers", **bad)
        nursery.cancel_scope.cancel()
    table = providers_table(answer)
    assert table.row_count == 1 and "1 peers serve m0" in str(table.title)
