"""Starting and stopping a py-libp2p host with its pubsub; telling its shutdown races apart."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import trio
from libp2p.tools.anyio_service import background_trio_service

from dmoa_p2p.exceptions import leaves
from dmoa_p2p.overlay._protocol import OverlayError

_log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 5.0
_SHUTDOWN_RACE = "Nursery is closed to new arrivals"


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


def _is_shutdown_race(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and _SHUTDOWN_RACE in str(exc)


def after_teardown(exc: BaseException, body_error: BaseException | None) -> BaseException | None:
    """What to raise once the overlay stopped with `exc`; None when only libp2p's shutdown raced.

    `body_error` is what the `async with` block raised, if anything.
    """

    def is_race(leaf: BaseException) -> bool:
        return leaf is not body_error and _is_shutdown_race(leaf)

    rest: BaseException | None
    if isinstance(exc, BaseExceptionGroup):
        races, rest = exc.split(is_race)
        rest = exc if races is None else rest  # split() copies even when nothing matched
    else:
        rest = None if is_race(exc) else exc
    if rest is not exc:
        _log.debug("py-libp2p raced its own shutdown (suppressed): %r", exc)
    if rest is None:
        if body_error is None:
            return None
        # the race cut the block short while it was still running: never hide that
        error = OverlayError("py-libp2p stopped while the overlay was in use")
        error.__cause__ = exc
        return error
    if body_error is not None and leaves(rest) == [body_error]:
        return body_error  # the caller's own exception, not wrapped by libp2p's nurseries
    return rest


def leave_connections_to_the_node(host: Any) -> None:
    """Stop py-libp2p 0.8.1's AutoConnector from dialling every peer it has addresses for.

    Below 50 connections it dials up to 150 peers from the peerstore every 10 s and after
    every disconnect, and asks the DHT for more when it knows fewer than 20: connections
    and dials grow with the swarm, against the node's own bounded set of neighbours
    (`node/_neighbours.py`). Shown by tests/integration/test_libp2p_overlay.py::
    test_a_known_peer_is_not_dialled_behind_the_nodes_back.
    """

    async def dial_nobody() -> None:
        return None

    host.get_network().auto_connector.maybe_connect = dial_nobody


def unleak_inbound_slots(host: Any) -> None:
    """Work around py-libp2p 0.8.1 locking a node out after 250 inbound connections.

    Its `Swarm._handle_inbound_connection` takes a slot of `_inbound_limiter`
    (max_connections − min_connections = 250) and gives it back only when the handler
    returns, which `_do_handle_inbound_connection` makes wait for the whole swarm to stop:
    every inbound connection ever accepted holds a slot, closed or not, and the 251st
    newcomer is refused. An unlimited limiter restores what the cap was meant to leave
    open; connections per peer stay capped at one. Shown by tests/integration/
    test_adversary.py::test_hundreds_of_identities_that_connect_and_leave_do_not_lock_newcomers_out.
    """
    network = host.get_network()
    if isinstance(getattr(network, "_inbound_limiter", None), trio.CapacityLimiter):
        network._inbound_limiter = trio.CapacityLimiter(math.inf)
