"""Direct messages over py-libp2p: one length-prefixed message per stream, acknowledged."""

from __future__ import annotations

import collections
import functools
import logging
from typing import Any

import attrs
import trio
from libp2p.custom_types import TProtocol

from dmoa_p2p.overlay._protocol import DirectHandler, OverlayError

_log = logging.getLogger(__name__)

# Wire format, one message per stream: sender writes a 4-byte big-endian length and
# the bytes; receiver answers one byte and closes.
_PREFIX_BYTES = 4
MAX_MESSAGE_BYTES = 2 ** (8 * _PREFIX_BYTES) - 1
ANSWER_OK = b"\x01"
ANSWER_TOO_LARGE = b"\x02"
ANSWER_CLOSING = b"\x03"  # the receiving overlay is shutting down
_REFUSALS = {
    ANSWER_TOO_LARGE: "refused: larger than the receiver's limit",
    ANSWER_CLOSING: "refused: the receiver is shutting down",
}
# a sender that stalls mid-message must not hold a receiving task forever
RECEIVE_TIMEOUT_S = 60.0
_RELEASE_TIMEOUT_S = 1.0


@attrs.frozen
class _Handler:
    handler: DirectHandler
    max_bytes: int


class DirectStreams:
    """The two halves of `Overlay.send` / `set_handler` on a running py-libp2p host.

    Handlers run in `nursery` (the overlay's), never inside libp2p's stream tasks.
    """

    def __init__(self, host: Any, nursery: trio.Nursery) -> None:
        self._host = host
        self._nursery = nursery
        self._handlers: dict[str, _Handler] = {}
        self._closed = False
        # messages handed to a handler, and messages refused as too large, per protocol
        self.received: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()

    def set_handler(self, protocol: str, handler: DirectHandler, *, max_bytes: int) -> None:
        if not 0 <= max_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(f"max_bytes must be in [0, {MAX_MESSAGE_BYTES}], not {max_bytes}")
        known = protocol in self._handlers
        self._handlers[protocol] = _Handler(handler, max_bytes)
        if not known:  # the libp2p handler looks the current one up per stream
            self._host.set_stream_handler(
                TProtocol(protocol), functools.partial(self._on_stream, protocol)
            )

    def close(self) -> None:
        """Refuse streams from now on (the host is about to stop)."""
        self._closed = True

    async def send(self, peer_id: str, protocol: str, data: bytes, timeout_s: float) -> None:
        what = f"cannot send to {peer_id} on {protocol!r}"
        if len(data) > MAX_MESSAGE_BYTES:
            raise OverlayError(f"{what}: {len(data)} bytes exceed the {MAX_MESSAGE_BYTES} maximum")
        # new_stream() would dial an unconnected peer from the peerstore: keep to
        # connected peers, like publish and the in-memory overlay
        peer = _connected_id(self._host, peer_id)
        if peer is None:
            raise OverlayError(f"{what}: not connected")
        frame = len(data).to_bytes(_PREFIX_BYTES, "big") + data
        # a timeout may cut a yamux frame short and so break the connection; it only
        # strikes when the connection is stuck anyway
        with trio.move_on_after(timeout_s) as waiting:
            answer = await self._deliver(peer, protocol, frame, what)
        if waiting.cancelled_caught:
            raise OverlayError(f"{what}: no acknowledgement within {timeout_s:g} s")
        if answer != ANSWER_OK:
            reason = _REFUSALS.get(answer, f"stream ended without acknowledgement ({answer!r})")
            raise OverlayError(f"{what}: {reason}")

    async def _deliver(self, peer: Any, protocol: str, frame: bytes, what: str) -> bytes:
        """Open a stream, send `frame`, return the receiver's answer (b"" if none came)."""
        try:
            stream = await self._host.new_stream(peer, [TProtocol(protocol)])
        except Exception as exc:
            # unknown protocol, dead connection, or the host stopping
            raise OverlayError(f"{what}: {error_reason(exc)}") from exc
        return await _exchange(stream, frame)

    async def _on_stream(self, protocol: str, stream: Any) -> None:
        """libp2p's handler for `protocol`: read, answer, close, then hand over; never raises."""
        entry = self._handlers[protocol]
        try:
            sender = str(stream.muxed_conn.peer_id.to_base58())
            with trio.fail_after(RECEIVE_TIMEOUT_S):
                data = await self._receive(protocol, stream, entry.max_bytes)
        except Exception as exc:  # reset, EOF, timeout: the sender sees no answer
            _log.debug("direct stream on %r failed: %r", protocol, exc)
            with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT_S):
                await _reset_quietly(stream)
            return
        if data is None:
            return
        try:
            self._nursery.start_soon(self._run_handler, protocol, entry.handler, sender, data)
        except RuntimeError:  # the overlay's nursery closed after the answer was sent
            _log.debug("direct message on %r dropped: the overlay stopped", protocol)

    async def _receive(self, protocol: str, stream: Any, max_bytes: int) -> bytes | None:
        """The message on `stream`, acknowledged and closed; None if refused."""
        if self._closed:
            await _refuse(stream, ANSWER_CLOSING)
            return None
        length = int.from_bytes(await _read_exactly(stream, _PREFIX_BYTES), "big")
        if length > max_bytes:
            self.refused[protocol] += 1
            _log.debug("direct message on %r refused: %d > %d bytes", protocol, length, max_bytes)
            await _refuse(stream, ANSWER_TOO_LARGE)
            return None
        data = await _read_exactly(stream, length)
        await stream.write(ANSWER_OK)
        await stream.close()
        self.received[protocol] += 1
        return data

    async def _run_handler(
        self, protocol: str, handler: DirectHandler, sender: str, data: bytes
    ) -> None:
        try:
            await handler(sender, data)
        except Exception:
            _log.exception("handler of direct protocol %r raised", protocol)


def _connected_id(host: Any, peer_id: str) -> Any:
    """`peer_id` as a libp2p ID if the host has a connection to it, else None."""
    for peer in host.get_connected_peers():
        if str(peer.to_base58()) == peer_id:
            return peer
    return None


async def _exchange(stream: Any, frame: bytes) -> bytes:
    """Write `frame` while waiting for the one-byte answer (b"" if none came); release `stream`.

    Concurrently, because a receiver refuses a large message without reading it: a
    sender that wrote first would wait for flow-control credit that never comes.
    """

    async def write() -> None:
        try:
            await stream.write(frame)
        except Exception as exc:  # the answer, or its absence, says what happened
            _log.debug("direct stream write ended: %r", exc)

    answer = b""
    released = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            try:
                answer = await stream.read(1)
            except Exception as exc:
                _log.debug("direct stream ended before its answer: %r", exc)
            if answer != ANSWER_OK:
                released = True
                await _reset_quietly(stream)  # a writer waiting for credit stops at its next frame
    finally:
        if not released:
            # shielded so that a timeout still releases the stream; bounded, as a stuck
            # connection would hold even the closing frame
            with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT_S):
                await (_close_quietly if answer == ANSWER_OK else _reset_quietly)(stream)
    return answer


async def _read_exactly(stream: Any, n: int) -> bytes:
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
