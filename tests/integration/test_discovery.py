"""Finding peers without a bootstrap list: mDNS on the local network, provider records (DHT)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.discovery.mdns.broadcaster import PeerBroadcaster
from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

from dmoa_p2p.control import call_control
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import Overlay, OverlayError, model_key, open_libp2p_overlay
from dmoa_p2p.overlay._lan_peers import mdns_service_type
from dmoa_p2p.testing import free_tcp_port, libp2p_swarm, wait_for

pytestmark = pytest.mark.integration

LOCAL = ["/ip4/127.0.0.1/tcp/0"]


def swarm_name() -> str:
    """An mDNS service name of this test's own: tests running at once never meet."""
    return f"dmoa-t{secrets.token_hex(4)}"


def connected(a: Overlay, b: Overlay) -> bool:
    return b.peer_id in a.connected_peers() and a.peer_id in b.connected_peers()


async def test_overlays_with_mdns_find_each_other_and_none_with_mdns_off_or_another_name() -> None:
    name = swarm_name()
    async with contextlib.AsyncExitStack() as stack:

        async def open_overlay(mdns: str | None) -> Overlay:
            opened = open_libp2p_overlay(NodeIdentity.generate(), LOCAL, mdns=mdns)
            return await stack.enter_async_context(opened)

        a, b = await open_overlay(name), await open_overlay(name)
        silent = await open_overlay(None)  # mDNS off
        elsewhere = await open_overlay(swarm_name())  # another swarm's name
        start = time.monotonic()
        await wait_for(lambda: connected(a, b), 20.0)
        print(f"found and connected through mDNS in {time.monotonic() - start:.2f} s")
        await trio.sleep(3.0)  # the others had as long again to hear of anyone
        assert a.connected_peers() == {b.peer_id} and b.connected_peers() == {a.peer_id}
        assert silent.connected_peers() == frozenset()
        assert elsewhere.connected_peers() == frozenset()


async def open_chain(stack: contextlib.AsyncExitStack, n: int) -> list[Overlay]:
    """`n` publicly reachable overlays (DHT servers) in a chain: 0 - 1 - ... - n-1."""
    overlays: list[Overlay] = []
    for _ in range(n):
        opened = open_libp2p_overlay(NodeIdentity.generate(), LOCAL, reachability="public")
        overlays.append(await stack.enter_async_context(opened))
        if len(overlays) > 1:
            await overlays[-1].connect(overlays[-2].listen_addrs[0])

    def neighbours_known() -> bool:
        # a peer enters the routing table once identify says it serves the DHT (polled each
        # second): until then a lookup may stop short of the records
        sizes = [overlay._providers.routing_table_size for overlay in overlays]  # type: ignore[attr-defined]
        return all(size >= (1 if i in (0, n - 1) else 2) for i, size in enumerate(sizes))

    await wait_for(neighbours_known, timeout_s=20.0)
    return overlays


async def provide_soon(overlay: Overlay, key: str, timeout_s: float = 20.0) -> float:
    """Provide `key` once a DHT peer takes the record (the routing table has one); seconds."""
    start = time.monotonic()
    while not await overlay.provide(key):
        assert time.monotonic() - start < timeout_s, "no DHT peer took the record"
        await trio.sleep(0.5)
    return time.monotonic() - start


async def test_a_provider_record_is_found_through_the_dht_by_a_peer_not_connected_to_it() -> None:
    async with contextlib.AsyncExitStack() as stack:
        overlays = await open_chain(stack, 5)
        provider, seeker = overlays[-1], overlays[0]
        if provider.peer_id in seeker.connected_peers():  # a DHT refresh may have dialled it
            await seeker.disconnect(provider.peer_id)
        assert provider.peer_id not in seeker.connected_peers()
        key = model_key("smollm2-135m")
        print(f"provided in {await provide_soon(provider, key):.2f} s")
        start = time.monotonic()
        found = await seeker.find_providers(key, 10)
        print(f"found {found} in {time.monotonic() - start:.2f} s")
        assert [p.peer_id for p in found] == [provider.peer_id]
        assert found[0].addrs == provider.listen_addrs
        assert await seeker.find_providers(model_key("another-model"), 10) == []


async def test_providers_are_listed_once_each_and_at_most_the_limit() -> None:
    async with contextlib.AsyncExitStack() as stack:
        overlays = await open_chain(stack, 5)
        key = model_key("shared-model")
        providers = overlays[2:]
        for overlay in providers:
            await provide_soon(overlay, key)
        seeker = overlays[0]
        found = await seeker.find_providers(key, 10)
        # every holder of the records tells of every provider: py-libp2p repeats them (G11)
        assert sorted(p.peer_id for p in found) == sorted(o.peer_id for o in providers)
        assert len(await seeker.find_providers(key, 2)) == 2
        # a provider looking up its own key finds the others, not only itself
        others = await providers[0].find_providers(key, 10)
        assert sorted(p.peer_id for p in others) == sorted(o.peer_id for o in providers[1:])


async def test_a_node_s_model_is_listed_by_another_node_s_providers_operation(
    tmp_path: Path,
) -> None:
    # DHT servers, as publicly reachable nodes are; every node serves the fake model
    async with libp2p_swarm(3, tmp_path, reachability="public") as swarm:
        seeker, model = swarm.members[0], swarm.nodes[1].backend.model_name
        await wait_for(lambda: all(node.announcer.announced for node in swarm.nodes), 30.0)
        answer = await call_control(seeker.control_path, "providers", model=model, limit=5)
        listed = answer["providers"]
        by_dht = {entry["peer_id"]: entry for entry in listed if entry["via"] == "dht"}
        assert answer["model"] == model
        assert set(by_dht) == {m.peer_id for m in swarm.members[1:]}
        for member in swarm.members[1:]:
            assert by_dht[member.peer_id]["addrs"] == list(member.listen_addrs)
        # the node's own model when none is named; and the same from the command line
        assert (await call_control(seeker.control_path, "providers"))["model"] == model
        command = [sys.executable, "-m", "dmoa_p2p", "providers", "--data-dir"]
        shown = await trio.run_process(
            [*command, str(seeker.data_dir), "--json", "--limit", "5"], capture_stdout=True
        )
        listed = json.loads(shown.stdout)["providers"]
        assert {e["peer_id"] for e in listed if e["via"] == "dht"} == set(by_dht)
        wide = {**os.environ, "COLUMNS": "100"}
        table = await trio.run_process(
            [*command, str(seeker.data_dir)], capture_stdout=True, env=wide
        )
        assert f"2 peers serve {model}" in table.stdout.decode()


def advertised(service_type: str, timeout_s: float = 10.0) -> list[str]:
    """The addresses (dnsaddr TXT records) the first instance of `service_type` heard names."""
    names: list[str] = []

    class Collect(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            names.append(name)

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            pass

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            pass

    zeroconf = Zeroconf()
    try:
        browser = ServiceBrowser(zeroconf, service_type, Collect())
        deadline = time.monotonic() + timeout_s
        while not names and time.monotonic() < deadline:
            time.sleep(0.1)
        browser.cancel()
        info = zeroconf.get_service_info(service_type, names[0], 3000) if names else None
        properties = info.properties if info is not None else {}
        return [v.decode() for k, v in properties.items() if k.startswith(b"dnsaddr") and v]
    finally:
        zeroconf.close()


async def test_mdns_never_advertises_the_wildcard_address_py_libp2p_s_own_would() -> None:
    identity, name = NodeIdentity.generate(), swarm_name()
    wildcard = [f"/ip4/0.0.0.0/tcp/{free_tcp_port()}"]
    async with open_libp2p_overlay(identity, wildcard, mdns=name) as overlay:
        addrs = await trio.to_thread.run_sync(advertised, mdns_service_type(name))
        # each interface's address, but for loopback when there are others
        interfaces = [a for a in overlay.listen_addrs if not a.startswith("/ip4/127.")]
        assert addrs and set(addrs) == set(interfaces or overlay.listen_addrs)
        assert not any("/0.0.0.0/" in addr for addr in addrs)
    # the bug worked around (trap G4): py-libp2p's broadcaster names the wildcard itself
    host = new_host(key_pair=create_new_key_pair(identity.seed))
    async with host.run(listen_addrs=[multiaddr.Multiaddr(wildcard[0])]):
        theirs = PeerBroadcaster(Zeroconf(), "_x._udp.local.", "x._x._udp.local.", "", 0, host=host)
        theirs._build_service_info(theirs._resolve_host_addrs())
        assert theirs.service_info is not None
        assert theirs.service_info.properties[b"dnsaddr"].startswith(b"/ip4/0.0.0.0/")
        theirs.zeroconf.close()


async def test_a_peer_address_may_name_its_host_by_dns_even_one_from_etc_hosts() -> None:
    async with (
        open_libp2p_overlay(NodeIdentity.generate(), LOCAL) as a,
        open_libp2p_overlay(NodeIdentity.generate(), LOCAL) as b,
    ):
        by_name = a.listen_addrs[0].replace("/ip4/127.0.0.1/", "/dns4/localhost/")
        assert await b.connect(by_name) == a.peer_id
        with pytest.raises(OverlayError, match=r"'no-such-host\.invalid' does not resolve"):
            await b.connect(by_name.replace("localhost", "no-such-host.invalid"))
