"""Starting and stopping a py-libp2p host with its pubsub, and closing every connection."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import trio
from libp2p.tools.anyio_service import background_trio_service

_log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def running(host: Any, pubsub: Any, gossipsub: Any, addrs: list[Any]) -> AsyncIterator[None]:
    async with (
        host.run(listen_addrs=addrs),
        background_trio_service(pubsub),
        background_trio_service(gossipsub),
    ):
        await pubsub.wait_until_ready()
        try:
            yield
        finally:
            connections = host.get_network().get_connections()
            # host.run() only cancels its tasks, leaking sockets; and closing the
            # connections before pubsub stops leaves fewer messages racing its shutdown
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
                # host.close() closes them one by one, each after 0.2 s of fixed
                # sleeps in py-libp2p: all at once, 10 peers take 0.2 s, not 2 s
                async with trio.open_nursery() as closing:
                    for connection in connections:
                        closing.start_soon(_close_connection, connection)
                await host.close()
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
                await _close_transports([c.muxed_conn for c in connections])


async def _close_connection(connection: Any) -> None:
    try:
        await connection.close()
    except Exception as exc:
        _log.debug("closing a connection failed: %r", exc)


async def _close_transports(muxed_conns: list[Any]) -> None:
    """Close the secured (and so the raw TCP) connection under each muxed connection.

    Closing the connections misses those whose close was cut short: when the
    cancellation that stops us also reaches libp2p's own tasks (a swarm of nodes
    stopping at once), a connection task sees its yamux reader cancelled and starts
    SwarmConn.close(), which marks the connection closed at once and is then
    cancelled at its first checkpoint (yamux's GO_AWAY), before the transport is
    closed; every later SwarmConn.close() returns at once. The listening side's
    socket is still closed by trio's serve_listeners; nothing closes the dialing
    side's. Closing a transport again is harmless.
    """
    for muxed in muxed_conns:
        secured = getattr(muxed, "secured_conn", None)
        if secured is None:
            continue
        if not muxed.is_closed:
            _log.debug("closing the transport of an unclosed connection to %s", muxed.peer_id)
        try:
            await secured.close()
        except Exception as exc:
            _log.debug("closing a connection's transport failed: %r", exc)
