"""MemoryNetwork: delivery, validation, propagation and leaving, under trio's autojump clock."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import trio
import trio.testing

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import MemoryNetwork, Overlay, OverlayError, OverlayMessage
from dmoa_p2p.overlay._delivery import RECEIVE_CAPACITY
from dmoa_p2p.overlay._memory import MemoryOverlay

TOPIC = "t"


def accept_all(publisher: str, data: bytes) -> bool:
    return True


def reject_bad(publisher: str, data: bytes) -> bool:
    return not data.startswith(b"bad")


def identity(n: int) -> NodeIdentity:
    return NodeIdentity.from_seed(bytes([n]) * 32)


async def open_line(
    stack: contextlib.AsyncExitStack, network: MemoryNetwork, n: int
) -> list[Overlay]:
    """n overlays connected in a line: 0 - 1 - ... - n-1."""
    overlays = [
        await stack.enter_async_context(network.open_overlay(identity(i))) for i in range(n)
    ]
    for left, right in itertools.pairwise(overlays):
        await left.connect(right.listen_addrs[0])
    return overlays


async def received(channel: trio.abc.ReceiveChannel[OverlayMessage]) -> list[bytes]:
    """Everything delivered on `channel` until it stays idle for a (virtual) second."""
    out = []
    with trio.move_on_after(1):
        while True:
            out.append((await channel.receive()).data)
    return out


async def test_publish_reaches_connected_subscribers_including_self(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(latency_s=0.05)
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_line(stack, network, 2)
        loner = await stack.enter_async_context(network.open_overlay(identity(9)))
        subs = [await o.subscribe(TOPIC, accept_all) for o in (a, b, loner)]
        start = trio.current_time()
        await a.publish(TOPIC, b"hello")
        for sub in subs[:2]:
            message = await sub.receive()
            assert message == OverlayMessage(topic=TOPIC, data=b"hello", publisher=a.peer_id)
            assert trio.current_time() - start == pytest.approx(0.05)
        assert await received(subs[2]) == []
        assert a.connected_peers() == {b.peer_id}
        assert b.connected_peers() == {a.peer_id}
        assert loner.connected_peers() == frozenset()


async def test_messages_arrive_in_publish_order(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(latency_s=0.01)
    async with contextlib.AsyncExitStack() as stack:
        a, b, c = await open_line(stack, network, 3)
        sub_c = await c.subscribe(TOPIC, accept_all)
        await b.subscribe(TOPIC, accept_all)
        for i in range(20):
            await a.publish(TOPIC, b"%d" % i)  # a is not subscribed: it still sends
        assert await received(sub_c) == [b"%d" % i for i in range(20)]


async def test_rejected_message_is_neither_delivered_nor_relayed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        a, b, c = await open_line(stack, network, 3)
        sub_a = await a.subscribe(TOPIC, accept_all)
        sub_b = await b.subscribe(TOPIC, reject_bad)
        sub_c = await c.subscribe(TOPIC, accept_all)
        await a.publish(TOPIC, b"bad one")
        await a.publish(TOPIC, b"good one")
        assert await received(sub_a) == [b"bad one", b"good one"]
        assert await received(sub_b) == [b"good one"]
        assert await received(sub_c) == [b"good one"]


async def test_raising_validator_rejects(autojump_clock: trio.testing.MockClock) -> None:
    def explode(publisher: str, data: bytes) -> bool:
        raise ValueError("boom")

    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_line(stack, network, 2)
        sub_a = await a.subscribe(TOPIC, explode)
        sub_b = await b.subscribe(TOPIC, accept_all)
        await a.publish(TOPIC, b"x")  # rejected by its own publisher: goes nowhere
        await b.publish(TOPIC, b"y")
        assert await received(sub_a) == []
        assert await received(sub_b) == [b"y"]


async def test_closing_an_overlay_disconnects_it(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with network.open_overlay(identity(1)) as a:
        sub_a = await a.subscribe(TOPIC, accept_all)
        async with network.open_overlay(identity(2)) as b:
            sub_b = await b.subscribe(TOPIC, accept_all)
            await b.connect(a.listen_addrs[0])
            address_b = b.listen_addrs[0]
        assert a.connected_peers() == frozenset()
        with pytest.raises(trio.EndOfChannel):
            await sub_b.receive()
        with pytest.raises(OverlayError, match="closed"):
            await b.publish(TOPIC, b"late")
        with pytest.raises(OverlayError, match="nothing listens"):
            await a.connect(address_b)
        await a.publish(TOPIC, b"alone")
        assert await received(sub_a) == [b"alone"]


async def test_connect_errors(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with network.open_overlay(identity(1)) as a, network.open_overlay(identity(2)) as b:
        port = a.listen_addrs[0].split("/")[2]
        for bad, reason in [
            ("/ip4/127.0.0.1/tcp/1", "not a /memory"),
            (f"/memory/{port}/p2p/{b.peer_id}", "the peer there is"),
            (a.listen_addrs[0], "own id"),
        ]:
            with pytest.raises(OverlayError, match=reason):
                await a.connect(bad)
        assert await a.connect(b.listen_addrs[0]) == b.peer_id
        assert await b.connect(a.listen_addrs[0]) == a.peer_id  # already connected: fine
        with pytest.raises(OverlayError, match="already in this network"):
            async with network.open_overlay(identity(1)):
                pass


async def test_full_receiver_counts_drops(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with network.open_overlay(identity(1)) as a:
        assert isinstance(a, MemoryOverlay)
        sub = await a.subscribe(TOPIC, accept_all)
        for i in range(RECEIVE_CAPACITY + 3):
            await a.publish(TOPIC, b"%d" % i)
        await trio.sleep(1)
        assert a.dropped[TOPIC] == 3
        assert (await sub.receive()).data == b"0"


async def test_error_in_block_propagates_unwrapped(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    with pytest.raises(KeyError):
        async with network.open_overlay(identity(1)):
            raise KeyError("mine")
    async with network.open_overlay(identity(1)) as again:  # the id is free again
        assert again.connected_peers() == frozenset()
