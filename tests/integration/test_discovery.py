"""Finding peers without a bootstrap list: mDNS on the local network, provider records in the DHT."""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path

import pytest
import trio

from dmoa_p2p.control import call_control
from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import Overlay, model_key, open_libp2p_overlay
from dmoa_p2p.testing import libp2p_swarm, wait_for

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
    return overlays


async def test_a_provider_record_is_found_through_the_dht_by_a_peer_not_connected_to_it() -> None:
    async with contextlib.AsyncExitStack() as stack:
        overlays = await open_chain(stack, 5)
        provider, seeker = overlays[-1], overlays[0]
        assert provider.peer_id not in seeker.connected_peers()
        key = model_key("smollm2-135m")
        start = time.monotonic()
        while not await provider.provide(key):  # until the routing tables hold a peer
            await trio.sleep(0.5)
            assert time.monotonic() - start < 20
        print(f"provided in {time.monotonic() - start:.2f} s")
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
            with trio.fail_after(20):
                while not await overlay.provide(key):
                    await trio.sleep(0.5)
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
    # DHT servers, as publicly reachable nodes are; presence off the table by a long interval
    async with libp2p_swarm(3, tmp_path, reachability="public") as swarm:
        seeker, model = swarm.members[0], swarm.nodes[1].backend.model_name
        with trio.fail_after(30):
            while not all(node.announcer.announced for node in swarm.nodes):
                await trio.sleep(0.2)
        answer = await call_control(seeker.control_path, "providers", model=model, limit=5)
        by_dht = {entry["peer_id"]: entry for entry in answer["providers"] if entry["via"] == "dht"}
        assert answer["model"] == model
        assert set(by_dht) == {m.peer_id for m in swarm.members[1:]}
        for member in swarm.members[1:]:
            assert by_dht[member.peer_id]["addrs"] == list(member.listen_addrs)
        # the node's own model when none is named
        assert (await call_control(seeker.control_path, "providers"))["model"] == model
