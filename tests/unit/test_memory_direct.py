"""MemoryNetwork direct messages: delivery, refusals and latency, under trio's autojump clock."""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import MemoryNetwork, Overlay, OverlayError
from dmoa_p2p.overlay._memory import MemoryOverlay

PROTOCOL = "/dmoa-p2p/test/1"


def identity(n: int) -> NodeIdentity:
    return NodeIdentity.from_seed(bytes([n]) * 32)


class Inbox:
    """A direct-message handler that records (sender, data) and when each arrived."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.times: list[float] = []

    async def __call__(self, sender: str, data: bytes) -> None:
        self.messages.append((sender, data))
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()


async def open_pair(
    stack: contextlib.AsyncExitStack, network: MemoryNetwork
) -> tuple[Overlay, Overlay]:
    a = await stack.enter_async_context(network.open_overlay(identity(1)))
    b = await stack.enter_async_context(network.open_overlay(identity(2)))
    await a.connect(b.listen_addrs[0])
    return a, b


async def test_message_reaches_the_handler_with_the_sender_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack, network)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=100)
        await a.send(b.peer_id, PROTOCOL, b"task")
        await trio.lowlevel.checkpoint()
        assert inbox.messages == [(a.peer_id, b"task")]
        assert isinstance(b, MemoryOverlay)
        assert b.received[PROTOCOL] == 1


async def test_not_connected_peer_raises(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with network.open_overlay(identity(1)) as a, network.open_overlay(identity(2)) as b:
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=100)
        with pytest.raises(OverlayError, match="not connected"):
            await a.send(b.peer_id, PROTOCOL, b"x")
        with pytest.raises(OverlayError, match="not connected"):
            await a.send(a.peer_id, PROTOCOL, b"to myself")
        assert inbox.messages == []


async def test_peer_without_handler_raises(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack, network)
        b.set_handler("/other/1", Inbox(), max_bytes=100)
        with pytest.raises(OverlayError, match="no handler"):
            await a.send(b.peer_id, PROTOCOL, b"x")


async def test_too_large_message_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack, network)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=4)
        with pytest.raises(OverlayError, match="larger than"):
            await a.send(b.peer_id, PROTOCOL, b"12345")
        await a.send(b.peer_id, PROTOCOL, b"1234")  # exactly the limit is fine
        await trio.sleep(1)
        assert inbox.messages == [(a.peer_id, b"1234")]
        assert isinstance(b, MemoryOverlay)
        assert (b.refused[PROTOCOL], b.received[PROTOCOL]) == (1, 1)


async def test_receiver_leaving_raises(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork(latency_s=0.1)
    inbox = Inbox()

    async def send_in_flight(a: Overlay, peer_id: str) -> None:
        with pytest.raises(OverlayError, match="connection closed"):
            await a.send(peer_id, PROTOCOL, b"in flight")

    async with network.open_overlay(identity(1)) as a:
        async with trio.open_nursery() as nursery, network.open_overlay(identity(2)) as b:
            b.set_handler(PROTOCOL, inbox, max_bytes=100)
            await a.connect(b.listen_addrs[0])
            nursery.start_soon(send_in_flight, a, b.peer_id)
            await trio.sleep(0.05)  # b leaves before the message arrives
        with pytest.raises(OverlayError, match="not connected"):
            await a.send(b.peer_id, PROTOCOL, b"late")
        with pytest.raises(OverlayError, match="closed"):
            await b.send(a.peer_id, PROTOCOL, b"from a closed overlay")
    assert inbox.messages == []


async def test_latency_delays_delivery_and_acknowledgement(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(latency_s=0.25)
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack, network)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=100)
        start = trio.current_time()
        await a.send(b.peer_id, PROTOCOL, b"x")
        assert trio.current_time() - start == pytest.approx(0.5)  # there and back
        assert inbox.times == [pytest.approx(start + 0.25)]
        with pytest.raises(OverlayError, match=r"no acknowledgement within 0\.4 s"):
            await a.send(b.peer_id, PROTOCOL, b"y", timeout_s=0.4)
        assert [data for _, data in inbox.messages] == [b"x", b"y"]  # y arrived, unconfirmed


async def test_slow_or_failing_handlers_do_not_hold_the_sender(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[bytes] = []

    async def slow_then_fail(sender: str, data: bytes) -> None:
        await trio.sleep(10)
        finished.append(data)
        raise ValueError("handler failed")

    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack, network)
        b.set_handler(PROTOCOL, slow_then_fail, max_bytes=100)
        start = trio.current_time()
        for data in (b"1", b"2", b"3"):
            await a.send(b.peer_id, PROTOCOL, data)
        assert trio.current_time() == start
        await trio.sleep(11)
        assert sorted(finished) == [b"1", b"2", b"3"]  # trio wakes sleepers in any order
        failures = [r for r in caplog.records if "handler of direct protocol" in r.getMessage()]
        assert len(failures) == 3
        await a.send(b.peer_id, PROTOCOL, b"4")  # still serving, and b closes over it
