"""Direct messages over py-libp2p: length-prefixed frames on reused streams, each acknowledged."""

from __future__ import annotations

import collections
import functools
import logging
import os
from typing import Any

import attrs
import trio
from libp2p.custom_types import TProtocol

from dmoa_p2p.overlay._delivery import run_handler, screened
from dmoa_p2p.overlay._protocol import (
    MAX_REJECTION_CHARS,
    DirectHandler,
    DirectScreen,
    OverlayError,
    ProtocolUnsupported,
)

_log = logging.getLogger(__name__)

# Wire format, any number of frames per stream: the sender writes a 4-byte big-endian
# length and the bytes, then waits for the receiver's one-byte answer before the next
# frame. Any answer but OK ends the stream.
_PREFIX_BYTES = 4
MAX_MESSAGE_BYTES = 2 ** (8 * _PREFIX_BYTES) - 1
ANSWER_OK = b"\x01"
ANSWER_TOO_LARGE = b"\x02"
ANSWER_CLOSING = b"\x03"  # the receiving overlay is shutting down
# rejected by the receiver's screen: followed by a 2-byte length and the reason in UTF-8
ANSWER_REJECTED = b"\x04"
_REASON_PREFIX_BYTES = 2
_REFUSALS = {
    ANSWER_TOO_LARGE: "refused: larger than the receiver's limit",
    ANSWER_CLOSING: "refused: the receiver is shutting down",
}
# a sender that stalls mid-frame must not hold a receiving task forever
RECEIVE_TIMEOUT_S = 60.0
_FIRST_READ_BYTES = 64 * 1024
# a stream without frames for this long is closed by its receiver; the sender re-opens
IDLE_TIMEOUT_S = 120.0
# streams per (peer, protocol), so that a large message does not hold up small ones
STREAMS_PER_PEER = 4
_RELEASE_TIMEOUT_S = 1.0


@attrs.frozen
class _Handler:
    handler: DirectHandler
    max_bytes: int
    screen: DirectScreen | None = None


@attrs.define
class _Pool:
    """Outbound streams to one peer for one protocol; each in use by one send at a time."""

    slots: trio.Semaphore
    idle: list[Any] = attrs.Factory(list)


class DirectStreams:
    """The two halves of `Overlay.send` / `set_handler` on a running py-libp2p host.

    A send reuses an idle stream to the peer, or opens one (at most `STREAMS_PER_PEER`
    per peer and protocol; more concurrent sends wait): a new stream costs yamux and
    multistream-select round trips, most of a small message's delivery time. A cached
    stream that fails before its answer is replaced once, so a message is delivered
    at least once, in rare cases twice. Handlers run in `nursery` (the overlay's),
    never inside libp2p's stream tasks.
    """

    def __init__(self, host: Any, nursery: trio.Nursery) -> None:
        self._host = host
        self._nursery = nursery
        self._streams_per_peer = STREAMS_PER_PEER
        self._idle_timeout_s = IDLE_TIMEOUT_S
        self._handlers: dict[str, _Handler] = {}
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._closed = False
        # messages handed to a handler, refused as too large, rejected by the screen
        self.received: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()
        # outbound streams opened, per protocol
        self.streams_opened: collections.Counter[str] = collections.Counter()

    def set_handler(
        self,
        protocol: str,
        handler: DirectHandler,
        *,
        max_bytes: int,
        screen: DirectScreen | None = None,
    ) -> None:
        if not 0 <= max_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(f"max_bytes must be in [0, {MAX_MESSAGE_BYTES}], not {max_bytes}")
        known = protocol in self._handlers
        self._handlers[protocol] = _Handler(handler, max_bytes, screen)
        if not known:  # the receive loop looks the current one up per frame
            self._host.set_stream_handler(
                TProtocol(protocol), functools.partial(self._on_stream, protocol)
            )

    def close(self) -> None:
        """Refuse frames from now on and close the idle outbound streams (the host stops next)."""
        self._closed = True
        idle: list[Any] = []
        for pool in self._pools.values():  # a send waiting for a slot must not take them
            idle += pool.idle
            pool.idle.clear()
        self._pools.clear()
        if idle:
            # the nursery is cancelled right after this; the task shields itself
            # before its first checkpoint, and the nursery waits for it
            self._nursery.start_soon(_close_all, idle)

    async def send(self, peer_id: str, protocol: str, data: bytes, timeout_s: float) -> None:
        what = f"cannot send to {peer_id} on {protocol!r}"
        if len(data) > MAX_MESSAGE_BYTES:
            raise OverlayError(f"{what}: {len(data)} bytes exceed the {MAX_MESSAGE_BYTES} maximum")
        self._prune()
        # new_stream() would dial an unconnected peer from the peerstore: keep to
        # connected peers, like publish and the in-memory overlay
        peer = _connected_id(self._host, peer_id)
        if peer is None:
            raise OverlayError(f"{what}: not connected")
        frame = len(data).to_bytes(_PREFIX_BYTES, "big") + data
        # a timeout may cut a yamux frame short and so break the connection; it only
        # strikes when the connection is stuck anyway
        with trio.move_on_after(timeout_s) as waiting:
            answer = await self._deliver(peer_id, peer, protocol, frame, what)
        if waiting.cancelled_caught:
            raise OverlayError(f"{what}: no acknowledgement within {timeout_s:g} s")
        if answer[:1] == ANSWER_REJECTED:
            raise OverlayError(f"{what}: rejected: {answer[1:].decode(errors='replace')}")
        if answer != ANSWER_OK:
            reason = _REFUSALS.get(answer, f"stream ended without acknowledgement ({answer!r})")
            raise OverlayError(f"{what}: {reason}")

    async def _deliver(
        self, peer_id: str, peer: Any, protocol: str, frame: bytes, what: str
    ) -> bytes:
        """Send `frame` on an idle stream or a new one; the receiver's answer (b"" if none came)."""
        pool = self._pools.get((peer_id, protocol))
        if pool is None:
            pool = self._pools[peer_id, protocol] = _Pool(trio.Semaphore(self._streams_per_peer))
        async with pool.slots:
            stream = await _take_idle(pool)
            if stream is not None:
                answer = await self._exchange(pool, stream, frame)
                if answer:
                    return answer
                # the cached stream broke unnoticed (reset, closed as idle, connection
                # lost) before an answer. The receiver hands a frame over only after
                # reading it whole and acknowledging it, so the retry normally repeats
                # nothing; only a frame whose acknowledgement alone was lost arrives
                # twice, and the MoA layer's wire gate rejects such a replayed envelope
                _log.debug("cached direct stream to %s failed: retrying on a new one", peer_id)
            stream = await self._open(peer, protocol, what)
            return await self._exchange(pool, stream, frame)

    async def _open(self, peer: Any, protocol: str, what: str) -> Any:
        try:
            stream = await self._host.new_stream(peer, [TProtocol(protocol)])
        except Exception as exc:
            # unknown protocol, dead connection, or the host stopping
            reason = error_reason(exc)
            if "protocols not supported" in reason:  # multiselect's words for "na"
                raise ProtocolUnsupported(f"{what}: {reason}") from exc
            raise OverlayError(f"{what}: {reason}") from exc
        self.streams_opened[protocol] += 1
        return stream

    async def _exchange(self, pool: _Pool, stream: Any, frame: bytes) -> bytes:
        """`frame`'s answer on `stream`; keeps an acknowledged stream for the next frame."""
        answer = await _send_frame(stream, frame)
        if answer != ANSWER_OK:
            return answer  # _send_frame has reset the stream
        if self._closed:  # close() has already closed the idle streams
            with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT_S):
                await _close_quietly(stream)
        else:
            pool.idle.append(stream)
        return answer

    def _prune(self) -> None:
        """Forget streams on closed connections, and pools with nothing in them or in use."""
        for key, pool in list(self._pools.items()):
            pool.idle = [stream for stream in pool.idle if not stream.muxed_conn.is_closed]
            # no task holds or waits for a slot: nothing else refers to the pool
            if not pool.idle and pool.slots.value == self._streams_per_peer:
                del self._pools[key]

    async def _on_stream(self, protocol: str, stream: Any) -> None:
        """libp2p's handler for `protocol`: read frames until the stream ends; never raises."""
        try:
            sender = str(stream.muxed_conn.peer_id.to_base58())
            while (data := await self._next_frame(protocol, sender, stream)) is not None:
                self._hand_over(protocol, sender, data)
        except Exception as exc:  # reset, timeout, a frame cut short: the sender sees no answer
            _log.debug("direct stream on %r failed: %r", protocol, exc)
            with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT_S):
                await _reset_quietly(stream)

    async def _next_frame(self, protocol: str, sender: str, stream: Any) -> bytes | None:
        """The next frame's data, acknowledged; None once the stream ended (and was closed)."""
        first = b""
        with trio.move_on_after(self._idle_timeout_s):
            # all that arrived belongs to this frame (the sender awaits each answer), and
            # one read means one yamux window update rather than two
            first = await _read_some(stream, _FIRST_READ_BYTES)
        if not first:  # the sender closed the stream, or left it idle
            with trio.move_on_after(_RELEASE_TIMEOUT_S):
                await _close_quietly(stream)
            return None
        with trio.fail_after(RECEIVE_TIMEOUT_S):
            head, body = first[:_PREFIX_BYTES], first[_PREFIX_BYTES:]
            prefix = head + await read_exactly(stream, _PREFIX_BYTES - len(head))
            if self._closed:
                await _refuse(stream, ANSWER_CLOSING)
                return None
            length = int.from_bytes(prefix, "big")
            max_bytes = self._handlers[protocol].max_bytes
            if length > max_bytes:
                self.refused[protocol] += 1
                _log.debug("direct message on %r refused: %d > %d", protocol, length, max_bytes)
                # the unread body would be taken for the next frame: end the stream
                await _refuse(stream, ANSWER_TOO_LARGE)
                return None
            if len(body) > length:
                raise ValueError("the sender wrote past its frame without awaiting the answer")
            data = body + await read_exactly(stream, length - len(body))
            reason = screened(self._handlers[protocol].screen, sender, data)
            if reason is not None:
                self.rejected[protocol] += 1
                encoded = reason.encode()
                await _refuse(stream, ANSWER_REJECTED + len(encoded).to_bytes(2, "big") + encoded)
                return None
            # acknowledge only a whole frame, and hand it over only once acknowledged
            await stream.write(ANSWER_OK)
        self.received[protocol] += 1
        return data

    def _hand_over(self, protocol: str, sender: str, data: bytes) -> None:
        handler = self._handlers[protocol].handler
        try:
            self._nursery.start_soon(run_handler, protocol, handler, sender, data)
        except RuntimeError:  # the overlay's nursery closed after the answer was sent
            _log.debug("direct message on %r dropped: the overlay stopped", protocol)


def _connected_id(host: Any, peer_id: str) -> Any:
    """`peer_id` as a libp2p ID if the host has a connection to it, else None."""
    for peer in host.get_connected_peers():
        if str(peer.to_base58()) == peer_id:
            return peer
    return None


async def _take_idle(pool: _Pool) -> Any:
    """The most recently used idle stream of `pool` still open both ways, or None.

    Resets the others: the receiver closed them as idle or reset them, or the
    connection went away.
    """
    while pool.idle:
        stream = pool.idle.pop()
        muxed = getattr(stream, "muxed_stream", None)
        ended = getattr(muxed, "recv_closed", False) or getattr(muxed, "reset_received", False)
        if not ended and not stream.muxed_conn.is_closed:
            return stream
        _log.debug("dropping an ended direct stream to %s", stream.muxed_conn.peer_id)
        await _reset_quietly(stream)
    return None


async def _send_frame(stream: Any, frame: bytes) -> bytes:
    """Write `frame` while waiting for the one-byte answer (b"" if none came).

    Concurrently, because a receiver refuses a large frame without reading it: a
    sender that wrote first would wait for flow-control credit that never comes.
    A stream without an OK answer is reset by the time this returns or raises.
    """

    async def write() -> None:
        try:
            await stream.write(frame)
        except Exception as exc:  # the answer, or its absence, says what happened
            _log.debug("direct stream write ended: %r", exc)

    answer = b""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            try:
                answer = await stream.read(1)
                if answer == ANSWER_REJECTED:  # the reason follows
                    length = int.from_bytes(await read_exactly(stream, 2), "big")
                    answer += await read_exactly(stream, min(length, 4 * MAX_REJECTION_CHARS))
            except Exception as exc:
                _log.debug("direct stream ended before its answer: %r", exc)
            if answer != ANSWER_OK:
                await _reset_quietly(stream)  # a writer waiting for credit stops at its next frame
    except BaseException:
        # a timeout may leave half a frame on the stream: never reuse it; shielded and
        # bounded, as a stuck connection would hold even the reset
        with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT_S):
            await _reset_quietly(stream)
        raise
    return answer


async def _read_some(stream: Any, n: int) -> bytes:
    """Up to `n` bytes from `stream`; b"" once it ended cleanly."""
    try:
        return bytes(await stream.read(n))
    except EOFError:  # libp2p's StreamEOF
        return b""


async def read_exactly(stream: Any, n: int) -> bytes:
    """`n` bytes from `stream`; EOFError if it ends first (yamux returns at most 64 KiB a read)."""
    buffer = bytearray()
    while len(buffer) < n:
        chunk = await stream.read(n - len(buffer))
        if not chunk:
            raise EOFError(f"stream ended after {len(buffer)} of {n} bytes")
        buffer += chunk
    return bytes(buffer)


async def _refuse(stream: Any, answer: bytes) -> None:
    # close, not reset: yamux drops buffered data on a reset, so the answer would be lost;
    # the sender resets once it has read the answer
    await stream.write(answer)
    await stream.close()


async def _close_all(streams: list[Any]) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT_S):
        for stream in streams:
            await _close_quietly(stream)


async def _close_quietly(stream: Any) -> None:
    try:
        await stream.close()
    except Exception as exc:
        _log.debug("closing a direct stream failed: %r", exc)


async def _reset_quietly(stream: Any) -> None:
    try:
        await stream.reset()
    except Exception as exc:
        _log.debug("resetting a direct stream failed: %r", exc)


def error_reason(exc: BaseException) -> str:
    """`exc`'s message followed by its innermost cause (libp2p hides it in MultiError)."""
    inner: BaseException = exc
    for _ in range(10):
        errors = getattr(inner, "errors", None)
        nested = inner.__cause__ or (errors[-1] if errors else None)
        if not isinstance(nested, BaseException):
            break
        inner = nested
    return str(exc) if inner is exc else f"{exc} ({inner})"


def dial_failure(exc: BaseException) -> str:
    """Why a dial failed, for people: the socket error at the bottom of libp2p's wrappers
    ("Connection refused"), else `error_reason`."""
    pending, seen = [exc], 0
    while pending and seen < 50:
        inner, seen = pending.pop(0), seen + 1
        if isinstance(inner, OSError) and inner.errno is not None:
            return os.strerror(inner.errno)
        pending += [e for e in (inner.__cause__, inner.__context__) if e is not None]
        pending += list(getattr(inner, "errors", None) or getattr(inner, "exceptions", None) or [])
    return error_reason(exc)
