"""Real py-libp2p direct messages on 127.0.0.1: delivery, refusals, stream reuse, lifecycle."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import pytest
import trio
from libp2p.network.stream.exceptions import StreamReset

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import Overlay, OverlayError, _libp2p_direct, open_libp2p_overlay
from dmoa_p2p.overlay._libp2p import Libp2pOverlay

pytestmark = pytest.mark.integration

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
PROTOCOL = "/dmoa-p2p/test/1"


class Inbox:
    """A direct-message handler that records (sender, data)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def __call__(self, sender: str, data: bytes) -> None:
        self.messages.append((sender, data))
        await trio.lowlevel.checkpoint()


async def open_pair(stack: contextlib.AsyncExitStack) -> tuple[Overlay, Overlay]:
    a, b = [
        await stack.enter_async_context(open_libp2p_overlay(NodeIdentity.generate(), LOCAL))
        for _ in range(2)
    ]
    await a.connect(b.listen_addrs[0])
    return a, b


def opened(overlay: Overlay) -> int:
    """Outbound direct streams `overlay` opened on PROTOCOL."""
    assert isinstance(overlay, Libp2pOverlay)
    return overlay.streams_opened[PROTOCOL]


def inbound_streams(overlay: Overlay) -> list[Any]:
    """The open streams peers opened to `overlay` on PROTOCOL."""
    assert isinstance(overlay, Libp2pOverlay)
    return [
        stream
        for connection in overlay._host.get_network().get_connections()
        for stream in connection.get_streams()
        if stream.get_protocol() == PROTOCOL
    ]


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 (nothing to wait on but the condition)
            await trio.sleep(0.01)


async def test_message_reaches_the_handler_with_the_sender_id() -> None:
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        inbox_a, inbox_b = Inbox(), Inbox()
        a.set_handler(PROTOCOL, inbox_a, max_bytes=1000)
        b.set_handler(PROTOCOL, inbox_b, max_bytes=1000)
        await a.send(b.peer_id, PROTOCOL, b"task")
        await b.send(a.peer_id, PROTOCOL, b"result")  # against the dial direction too
        await wait_until(lambda: len(inbox_a.messages) == len(inbox_b.messages) == 1)
        assert inbox_b.messages == [(a.peer_id, b"task")]
        assert inbox_a.messages == [(b.peer_id, b"result")]


async def test_large_message_arrives_intact() -> None:
    data = os.urandom(256 * 1024)
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=len(data))
        await a.send(b.peer_id, PROTOCOL, data)
        await wait_until(lambda: len(inbox.messages) == 1)
        assert inbox.messages == [(a.peer_id, data)]


async def test_message_over_the_limit_is_refused_unread() -> None:
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=1000)
        # 1 MiB: more than yamux's 256 KiB window, so the sender cannot just write it all
        for size in (1001, 1024 * 1024):
            with trio.fail_after(5), pytest.raises(OverlayError, match="larger than"):
                await a.send(b.peer_id, PROTOCOL, bytes(size))
        await a.send(b.peer_id, PROTOCOL, bytes(1000))  # the connection still works
        await a.send(b.peer_id, PROTOCOL, b"small")
        await wait_until(lambda: len(inbox.messages) == 2)
        assert inbox.messages == [(a.peer_id, bytes(1000)), (a.peer_id, b"small")]
        assert isinstance(b, Libp2pOverlay)
        assert (b.refused[PROTOCOL], b.received[PROTOCOL]) == (2, 2)
        # a refusal ends its stream (its unread body would garble the next frame)
        assert opened(a) == 3


async def test_unknown_protocol_raises() -> None:
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        b.set_handler("/other/1", Inbox(), max_bytes=1000)
        with trio.fail_after(5), pytest.raises(OverlayError, match="cannot send"):
            await a.send(b.peer_id, PROTOCOL, b"x")


async def test_unreachable_or_stopped_peer_raises_in_bounded_time() -> None:
    async with open_libp2p_overlay(NodeIdentity.generate(), LOCAL) as a:
        async with open_libp2p_overlay(NodeIdentity.generate(), LOCAL) as b:
            b.set_handler(PROTOCOL, Inbox(), max_bytes=1000)
            with pytest.raises(OverlayError, match="not connected"):
                await a.send(b.peer_id, PROTOCOL, b"x")
            await a.connect(b.listen_addrs[0])
            await a.send(b.peer_id, PROTOCOL, b"x")
        with trio.fail_after(3), pytest.raises(OverlayError, match="cannot send"):
            await a.send(b.peer_id, PROTOCOL, b"after it stopped", timeout_s=2)
        with pytest.raises(OverlayError, match="closed"):
            await b.send(a.peer_id, PROTOCOL, b"from a stopped overlay")


async def test_concurrent_sends_are_all_delivered() -> None:
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=100_000)
        sent = {b"%d" % i + bytes(i * 1000) for i in range(20)}
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for data in sent:
                    nursery.start_soon(a.send, b.peer_id, PROTOCOL, data)
        await wait_until(lambda: len(inbox.messages) == 20)
        assert {data for _, data in inbox.messages} == sent
        assert {sender for sender, _ in inbox.messages} == {a.peer_id}
        assert 1 <= opened(a) <= _libp2p_direct.STREAMS_PER_PEER


async def test_sequential_sends_reuse_one_stream() -> None:
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=1000)
        sent = [b"%d" % i for i in range(50)]
        for data in sent:
            await a.send(b.peer_id, PROTOCOL, data)
        await wait_until(lambda: len(inbox.messages) == 50)
        assert sorted(data for _, data in inbox.messages) == sorted(sent)
        assert opened(a) == 1


async def test_a_stream_reset_by_the_receiver_is_replaced() -> None:
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=1000)
        await a.send(b.peer_id, PROTOCOL, b"first")
        [inbound] = inbound_streams(b)
        await inbound.reset()  # as a receiver that gave up on the stream
        await a.send(b.peer_id, PROTOCOL, b"second")  # the reset may still be on its way
        await wait_until(lambda: len(inbox.messages) == 2)
        assert [data for _, data in inbox.messages] == [b"first", b"second"]
        assert opened(a) == 2


async def test_a_cached_stream_that_broke_unnoticed_is_retried_once() -> None:
    async def broken(*args: object) -> bytes:
        raise StreamReset("the peer's reset is still on its way")

    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=1000)
        await a.send(b.peer_id, PROTOCOL, b"first")
        assert isinstance(a, Libp2pOverlay)
        [cached] = a._direct._pools[b.peer_id, PROTOCOL].idle
        cached.read = cached.write = broken
        await a.send(b.peer_id, PROTOCOL, b"second")
        await a.send(b.peer_id, PROTOCOL, b"third")  # on the replacement
        await wait_until(lambda: len(inbox.messages) == 3)
        assert [data for _, data in inbox.messages] == [b"first", b"second", b"third"]
        assert opened(a) == 2


async def test_an_idle_stream_closed_by_the_receiver_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_libp2p_direct, "IDLE_TIMEOUT_S", 0.2)
    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        inbox = Inbox()
        b.set_handler(PROTOCOL, inbox, max_bytes=1000)
        await a.send(b.peer_id, PROTOCOL, b"first")
        await wait_until(lambda: not inbound_streams(b))
        await a.send(b.peer_id, PROTOCOL, b"after a pause")
        await wait_until(lambda: len(inbox.messages) == 2)
        assert opened(a) == 2


async def test_a_peer_that_comes_back_gets_a_fresh_stream() -> None:
    identity = NodeIdentity.generate()
    inbox = Inbox()
    listen = LOCAL
    async with open_libp2p_overlay(NodeIdentity.generate(), LOCAL) as a:
        for runs, run in enumerate((b"first run", b"second run"), start=1):
            # the same peer id and address: py-libp2p dials only the first TCP address
            # it knows for a peer, which would be the stale one
            async with open_libp2p_overlay(identity, listen) as b:
                b.set_handler(PROTOCOL, inbox, max_bytes=1000)
                address = b.listen_addrs[0]
                listen = [address.rsplit("/p2p/", 1)[0]]
                await a.connect(address)
                for _ in range(3):
                    await a.send(b.peer_id, PROTOCOL, run)
                await wait_until(lambda: len(inbox.messages) == 3 * runs)  # noqa: B023
            await wait_until(lambda: identity.peer_id not in a.connected_peers())
        assert [data for _, data in inbox.messages] == [b"first run"] * 3 + [b"second run"] * 3
        assert opened(a) == 2


async def test_slow_or_failing_handlers_do_not_hold_the_sender(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = trio.Event()

    async def wait_then_fail(sender: str, data: bytes) -> None:
        await release.wait()
        raise ValueError("handler failed")

    async with contextlib.AsyncExitStack() as stack:
        a, b = await open_pair(stack)
        b.set_handler(PROTOCOL, wait_then_fail, max_bytes=1000)
        with trio.fail_after(5):
            for _ in range(3):
                await a.send(b.peer_id, PROTOCOL, b"x")
        release.set()

        def failures() -> int:
            return sum("handler of direct protocol" in r.getMessage() for r in caplog.records)

        await wait_until(lambda: failures() == 3)
        await a.send(b.peer_id, PROTOCOL, b"still serving")


async def test_open_and_close_repeatedly_with_streams_in_flight() -> None:
    outcomes: list[str] = []

    async def send_quietly(sender: Overlay, peer_id: str, data: bytes) -> None:
        try:
            await sender.send(peer_id, PROTOCOL, data, timeout_s=3)
            outcomes.append("delivered")
        except OverlayError:
            outcomes.append("failed")

    async def hold(sender: str, data: bytes) -> None:
        await trio.sleep_forever()  # still running when its overlay stops

    async with open_libp2p_overlay(NodeIdentity.generate(), LOCAL) as a:
        a.set_handler(PROTOCOL, hold, max_bytes=1024 * 1024)
        for delay in (0.0, 0.02, 0.05, 0.1):  # stop b at different stages of the sends
            async with (
                trio.open_nursery() as nursery,
                open_libp2p_overlay(NodeIdentity.generate(), LOCAL) as b,
            ):
                b.set_handler(PROTOCOL, hold, max_bytes=1024 * 1024)
                await b.connect(a.listen_addrs[0])
                await b.send(a.peer_id, PROTOCOL, b"settled")
                for i in range(4):  # both ways, large enough to take a while
                    nursery.start_soon(send_quietly, a, b.peer_id, bytes(200_000 + i))
                    nursery.start_soon(send_quietly, b, a.peer_id, bytes(200_000 + i))
                await trio.sleep(delay)
            await wait_until(lambda: b.peer_id not in a.connected_peers())
        assert len(outcomes) == 32  # each ended delivered or with OverlayError, nothing else
