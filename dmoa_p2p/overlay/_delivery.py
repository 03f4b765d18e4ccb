"""Handing received messages on: pubsub ones to their subscriber without ever waiting,
direct ones to their protocol's handler, whose failure is logged and contained."""

from __future__ import annotations

import collections
import logging

import trio

from dmoa_p2p.overlay._protocol import (
    MAX_REJECTION_CHARS,
    DirectHandler,
    DirectScreen,
    OverlayMessage,
)

_log = logging.getLogger(__name__)

# py-libp2p's own subscription channel holds 32 messages; ours absorbs bursts behind it
RECEIVE_CAPACITY = 4096
_WARN_EVERY = 100  # dropped messages per warning


def deliver(
    send: trio.MemorySendChannel[OverlayMessage],
    message: OverlayMessage,
    dropped: collections.Counter[str],
) -> None:
    """Queue `message` for its subscriber; a full or gone subscriber loses it, counted."""
    topic = message.topic
    try:
        send.send_nowait(message)
    except trio.WouldBlock:
        dropped[topic] += 1
        if dropped[topic] % _WARN_EVERY == 1:  # a stuck receiver must not flood the log
            _log.warning(
                "receiver of topic %r is full: dropped a message (%d so far)",
                topic,
                dropped[topic],
            )
    except trio.BrokenResourceError:
        dropped[topic] += 1
        _log.debug("receiver of topic %r is closed: message dropped", topic)
    except trio.ClosedResourceError:
        pass  # the overlay is closing


async def run_handler(protocol: str, handler: DirectHandler, sender: str, data: bytes) -> None:
    """Run a direct protocol's handler on one message; its exception is logged, not raised."""
    try:
        await handler(sender, data)
    except Exception:
        _log.exception("handler of direct protocol %r raised", protocol)


def screened(screen: DirectScreen | None, sender: str, data: bytes) -> str | None:
    """What `screen` says of a message (None: accepted), at most MAX_REJECTION_CHARS long.

    A screen that raises rejects the message rather than break the stream.
    """
    if screen is None:
        return None
    try:
        reason = screen(sender, data)
    except Exception:
        _log.exception("the screen of a direct protocol raised")
        reason = "the receiver could not check the message"
    return None if reason is None else reason[:MAX_REJECTION_CHARS]
