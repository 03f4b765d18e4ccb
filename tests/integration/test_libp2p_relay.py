"""Circuit relay v2 between real py-libp2p overlays on 127.0.0.1: reservations, their renewal,
direct messages through the relay."""

from __future__ import annotations

import dataclasses
from contextlib import AbstractAsyncContextManager

import pytest
import trio

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import Overlay, _relay, open_libp2p_overlay
from dmoa_p2p.testing import wait_for

pytestmark = pytest.mark.integration

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
# py-libp2p renews a reservation 30 s before it expires: 33 s means at about 3 s
SHORT_TTL_S = 33


def open_private(relay_addr: str) -> AbstractAsyncContextManager[Overlay]:
    return open_libp2p_overlay(
        NodeIdentity.generate(), LOCAL, reachability="private", bootstrap=[relay_addr]
    )


async def test_a_private_node_renews_its_reservation_and_is_reached_through_the_relay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short = dataclasses.replace(_relay.RELAY_LIMITS, reservation_ttl=SHORT_TTL_S)
    monkeypatch.setattr(_relay, "RELAY_LIMITS", short)
    # everything here is on 127.0.0.1, which a relay normally must not be on
    monkeypatch.setattr(_relay, "is_private_ip", lambda ip: False)
    got: list[bytes] = []

    async def handler(sender: str, data: bytes) -> None:
        got.append(data)

    with trio.fail_after(30):
        async with open_libp2p_overlay(NodeIdentity.generate(), LOCAL, reachability="public") as r:
            (relay_addr,) = r.listen_addrs
            async with (
                open_private(relay_addr) as a,
                open_private(relay_addr) as b,
            ):
                for node in (a, b):
                    await node.connect(relay_addr)
                await wait_for(lambda: all("/p2p-circuit/" in str(n.listen_addrs) for n in (a, b)))
                assert b.listen_addrs == (f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}",)
                relays = b._relays  # type: ignore[attr-defined]
                relay_id = next(iter(relays._reserved))
                first_expiry = relays._transport._reservations[relay_id]
                # renewed early, on a new stream
                await wait_for(lambda: relays._transport._reservations[relay_id] > first_expiry)
                b.set_handler("/t/1", handler, max_bytes=2**20)
                assert await a.connect(b.listen_addrs[0]) == b.peer_id
                await a.send(b.peer_id, "/t/1", b"x" * 600_000)  # over the envelope cap
                assert got == [b"x" * 600_000]
                # a node never connected to the relay reaches b through it too
                async with open_libp2p_overlay(NodeIdentity.generate(), LOCAL) as c:
                    assert await c.connect(b.listen_addrs[0]) == b.peer_id
                    await c.send(b.peer_id, "/t/1", b"from c")
                assert got[1:] == [b"from c"]
