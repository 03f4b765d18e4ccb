"""The real overlay: py-libp2p GossipSub v1.1 with signed messages, on trio."""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.logs import claim_libp2p_logger
from dmoa_p2p.overlay._addresses import check_listen_ports, socket_peer
from dmoa_p2p.overlay._delivery import RECEIVE_CAPACITY, deliver
from dmoa_p2p.overlay._dht import ProviderRecords
from dmoa_p2p.overlay._dialback import DialBack
from dmoa_p2p.overlay._dns import connect_resolved, is_dns
from dmoa_p2p.overlay._libp2p_direct import DirectStreams, dial_failure
from dmoa_p2p.overlay._libp2p_holepunch import (
    HolePunching,
    advertised_addrs,
    link_kind,
)
from dmoa_p2p.overlay._libp2p_host import (
    after_teardown,
    leave_connections_to_the_node,
    running,
    unleak_inbound_slots,
)
from dmoa_p2p.overlay._libp2p_pubsub import new_pubsub
from dmoa_p2p.overlay._libp2p_router import new_router
from dmoa_p2p.overlay._mdns import LanDiscovery
from dmoa_p2p.overlay._protocol import (
    BadAddress,
    DirectHandler,
    DirectScreen,
    Overlay,
    OverlayError,
    OverlayMessage,
    Provider,
    Reachability,
    TopicValidator,
)
from dmoa_p2p.overlay._reachability import publicly_reachable
from dmoa_p2p.overlay._relay import Relays, is_circuit, is_relayed

_log = logging.getLogger(__name__)
claim_libp2p_logger()  # importing libp2p (above) reset its logger to print on stderr

CONNECT_TIMEOUT_S = 10.0
ADDRS_FRESH_S = 1.0  # how long the host's own addresses are taken as they were


class Libp2pOverlay:
    """`Overlay` over a running py-libp2p host, Pubsub and GossipSub router, and direct streams."""

    def __init__(
        self,
        host: Any,
        pubsub: Any,
        nursery: trio.Nursery,
        *,
        max_queued_per_peer: int,
        publish_timeout: float,
        relays: Relays | None = None,
        punching: HolePunching | None = None,
        providers: ProviderRecords | None = None,
    ) -> None:
        self._host = host
        self._relays = relays
        self._punching = punching
        self._providers = providers
        self._pubsub = pubsub
        self._nursery = nursery
        self._max_queued = max_queued_per_peer
        self._publish_timeout = publish_timeout
        self._senders: dict[str, trio.MemorySendChannel[OverlayMessage]] = {}
        self._closed = False
        self._own_addrs: tuple[float, tuple[str, ...]] = (0.0, ())  # (when, addresses)
        # messages lost because a receiver did not keep up, per topic
        self.dropped: collections.Counter[str] = collections.Counter()
        self._direct = DirectStreams(host, nursery)
        # direct messages handed to a handler / refused as too large, and outbound
        # direct streams opened, per protocol
        self.received = self._direct.received
        self.refused = self._direct.refused
        self.rejected = self._direct.rejected
        self.streams_opened = self._direct.streams_opened

    @property
    def peer_id(self) -> str:
        return str(self._host.get_id().to_base58())

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        # a node behind NAT: its own addresses reach no one outside, and py-libp2p does not
        # name the relays it holds reservations on (so peers would never find a way in)
        if self._relays is not None and self._relays.reserves:
            if circuits := self._relays.circuit_addrs():
                return circuits
            if self._relays.awaiting_reservation():
                return ()  # peers that dial the home address now would not try again soon
        return self._host_addrs()

    def _host_addrs(self) -> tuple[str, ...]:
        """The host's own addresses (see advertised_addrs), computed at most once a second:
        py-libp2p takes about 1 ms to name them, and every record and status names them."""
        computed_at, addrs = self._own_addrs
        if time.monotonic() - computed_at >= ADDRS_FRESH_S or not addrs:
            addrs = tuple(str(addr) for addr in self._host.get_addrs())
            self._own_addrs = (time.monotonic(), addrs)
        return addrs

    @property
    def reachability(self) -> Reachability:
        if self._relays is None:
            return Reachability(public=True, relaying=False)
        return self._relays.reachability()

    def connected_peers(self) -> frozenset[str]:
        return frozenset(str(p.to_base58()) for p in self._host.get_connected_peers())

    async def disconnect(self, peer_id: str) -> None:
        self._check_open()
        with contextlib.suppress(ValueError):  # not a peer id, so not connected either
            await self._host.disconnect(ID.from_base58(peer_id))

    def link(self, peer_id: str) -> str | None:
        with contextlib.suppress(ValueError):  # not a peer id, so not connected either
            return link_kind(self._host, ID.from_base58(peer_id))
        return None

    def remote_host(self, peer_id: str) -> str | None:
        with contextlib.suppress(ValueError):  # not a peer id, so not connected either
            connections = self._host.get_network().get_connections(ID.from_base58(peer_id))
            # a relayed connection's socket is the relay's: the peer's own IP comes first
            for connection in sorted(connections, key=is_relayed):
                if (remote := socket_peer(connection)) is not None:
                    return remote[0]
        return None

    def block(self, peer_id: str) -> None:
        # py-libp2p checks its blacklist against forwarder and originator before it verifies
        # a message's signature; it also drops the peer's pubsub stream
        self._pubsub.add_to_blacklist(ID.from_base58(peer_id))

    def unblock(self, peer_id: str) -> None:
        self._pubsub.remove_from_blacklist(ID.from_base58(peer_id))

    async def connect(self, multiaddr_: str) -> str:
        self._check_open()
        if is_dns(multiaddr_):  # see `resolved`: py-libp2p's resolver misses many names
            return await connect_resolved(multiaddr_, self.connect)
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(multiaddr_))
        except Exception as exc:
            raise BadAddress(f"cannot connect to {multiaddr_!r}: bad multiaddr: {exc}") from exc
        if info.peer_id == self._host.get_id():
            raise OverlayError(f"cannot connect to {multiaddr_!r}: that is this node's own id")
        network = self._host.get_network()
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                if self._relays is not None and is_circuit(multiaddr_):
                    # the circuit transport tries a peer's stored addresses first, stale or not
                    if not network.get_connections(info.peer_id):
                        self._host.get_peerstore().clear_addrs(info.peer_id)
                    await self._relays.dial(multiaddr.Multiaddr(multiaddr_))
                    if self._punching is not None:
                        self._nursery.start_soon(self._punching.punch, info.peer_id)
                else:
                    # the address asked, not host.connect(): that stores it in the peerstore
                    # first, where py-libp2p's DHT hands it to other peers and dials it itself
                    # while the dial is under way, past the dialer's budget of one dial per
                    # address a minute (any peer could name any host:port); and host.connect
                    # dials only the first address it stored for a peer, and none for 60 s
                    # after one failed (Swarm._negative_peer_cache)
                    if not network.get_connections(info.peer_id):
                        await network.dial_addr(info.addrs[0], info.peer_id)
        except trio.TooSlowError as exc:
            raise OverlayError(
                f"cannot connect to {multiaddr_!r}: no answer within {CONNECT_TIMEOUT_S:g} s"
            ) from exc
        except Exception as exc:
            raise OverlayError(f"cannot connect to {multiaddr_!r}: {dial_failure(exc)}") from exc
        return str(info.peer_id.to_base58())

    async def subscribe(
        self, topic: str, validator: TopicValidator
    ) -> trio.abc.ReceiveChannel[OverlayMessage]:
        self._check_open()
        if topic in self._senders:
            raise OverlayError(f"already subscribed to topic {topic!r}")
        send, receive = trio.open_memory_channel[OverlayMessage](RECEIVE_CAPACITY)
        self._senders[topic] = send
        # set before subscribing so that no message is ever accepted unvalidated
        self._pubsub.set_topic_validator(topic, _sync_validator(validator), False)
        subscription = await self._pubsub.subscribe(topic)
        self._nursery.start_soon(self._drain, topic, subscription, send)
        return receive

    async def publish(self, topic: str, data: bytes) -> None:
        self._check_open()
        with trio.move_on_after(self._publish_timeout) as waiting:
            # publish() never blocks and per-peer queues drop beyond 32: wait for room;
            # libp2p signals no event when a queue shrinks, hence the polling
            while self._longest_queue() > self._max_queued:  # noqa: ASYNC110
                await trio.sleep(0.001)
        if waiting.cancelled_caught:
            raise OverlayError(
                f"cannot publish on {topic!r}: outbound queues stayed above "
                f"{self._max_queued} messages for {self._publish_timeout:g} s"
            )
        await self._pubsub.publish(topic, data)
        # publish() may not yield: let the drain tasks empty libp2p's 32-slot channels
        await trio.lowlevel.checkpoint()

    def set_handler(
        self,
        protocol: str,
        handler: DirectHandler,
        *,
        max_bytes: int,
        screen: DirectScreen | None = None,
    ) -> None:
        self._check_open()
        self._direct.set_handler(protocol, handler, max_bytes=max_bytes, screen=screen)

    async def send(
        self, peer_id: str, protocol: str, data: bytes, *, timeout_s: float = 10.0
    ) -> None:
        self._check_open()
        await self._direct.send(peer_id, protocol, data, timeout_s)

    async def provide(self, key: str) -> bool:
        self._check_open()
        return self._providers is not None and await self._providers.provide(key)

    async def find_providers(self, key: str, limit: int) -> list[Provider]:
        self._check_open()
        return [] if self._providers is None else await self._providers.find(key, limit)

    def _longest_queue(self) -> int:
        # peer_queues: {ID: RpcQueue}; len() counts queued RPCs (priority + normal)
        return max((len(q) for q in self._pubsub.peer_queues.values()), default=0)

    def _check_open(self) -> None:
        if self._closed:
            raise OverlayError("the overlay is closed")

    async def _drain(
        self, topic: str, subscription: Any, send: trio.MemorySendChannel[OverlayMessage]
    ) -> None:
        channel = subscription.receive_channel
        async for raw in channel:
            self._forward(topic, raw, send)
            # move the whole backlog at once: libp2p's channel drops beyond 32
            while True:
                try:
                    raw = channel.receive_nowait()
                except trio.WouldBlock:
                    break
                self._forward(topic, raw, send)

    def _forward(self, topic: str, raw: Any, send: trio.MemorySendChannel[OverlayMessage]) -> None:
        message = OverlayMessage(
            topic=topic, data=bytes(raw.data), publisher=str(ID(raw.from_id).to_base58())
        )
        deliver(send, message, self.dropped)

    def _shutdown(self) -> None:
        """Close our channels and stop the drain tasks; libp2p stops after this."""
        # no unsubscribe: peers would then queue every publish for us ("pending
        # messages", 100 max, each overflow logged) until the connection closes
        self._closed = True
        self._direct.close()
        for send in self._senders.values():
            send.close()
        self._nursery.cancel_scope.cancel()


def _sync_validator(validator: TopicValidator) -> Callable[[Any, Any], bool]:
    """Adapt our validator to libp2p's `fn(forwarder, msg)`; it must never raise into libp2p."""

    def validate(forwarder: Any, msg: Any) -> bool:
        try:
            return bool(validator(str(ID(msg.from_id).to_base58()), bytes(msg.data)))
        except Exception:
            _log.debug("topic validator raised: message rejected", exc_info=True)
            return False

    return validate


def _listen_multiaddrs(listen_addrs: Sequence[str]) -> list[Any]:
    try:
        return [multiaddr.Multiaddr(addr) for addr in listen_addrs]
    except Exception as exc:
        raise BadAddress(f"bad listen address in {list(listen_addrs)}: {exc}") from exc


@contextlib.asynccontextmanager
async def open_libp2p_overlay(
    identity: NodeIdentity,
    listen_addrs: Sequence[str],
    *,
    heartbeat_interval: float = 1.0,
    max_queued_per_peer: int = 8,
    publish_timeout: float = 10.0,
    relay_service: bool = True,
    reachability: str = "auto",
    bootstrap: Sequence[str] = (),
    mdns: str | None = None,
    dht: bool = True,
) -> AsyncIterator[Overlay]:
    """Run a py-libp2p host with GossipSub listening on `listen_addrs`, for the block's duration.

    A publicly reachable node (see `publicly_reachable`) relays for others unless
    `relay_service` is False; any other keeps reservations on relays, `bootstrap` peers first.
    Both serve a Kademlia DHT (`ProviderRecords`) unless `dht` is False; with `mdns`, a
    service name such as `MDNS_SERVICE`, the node advertises itself on the LAN and dials
    peers heard there.
    """
    public = publicly_reachable(reachability, listen_addrs)
    addrs = _listen_multiaddrs(listen_addrs)
    check_listen_ports(listen_addrs)
    host = new_host(
        key_pair=create_new_key_pair(identity.seed),
        # without it every connect() waits 250 ms for a second connection
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        addrs_factory=advertised_addrs,
    )
    unleak_inbound_slots(host)
    leave_connections_to_the_node(host)
    gossipsub = new_router(heartbeat_interval)
    pubsub = new_pubsub(host, gossipsub)
    body_error: BaseException | None = None
    try:
        async with (
            running(host, pubsub, gossipsub, addrs),
            background_trio_service(punching := HolePunching(host)),
            trio.open_nursery() as nursery,
        ):
            auto = reachability == "auto"
            relays = Relays(
                host, public=public, guessed=auto, relay_service=relay_service, bootstrap=bootstrap
            )
            await nursery.start(relays.run)
            # every node answers dial-backs; one left to guess asks for them
            await nursery.start(DialBack(host, relays if auto else None).run)
            # records name the overlay's addresses: relays' for a node behind NAT
            providers = None
            if dht:
                providers = ProviderRecords(
                    host, server=public, advertised=lambda: overlay.listen_addrs
                )
                await nursery.start(providers.run)
                relays.verdict_followers.append(providers.follow)
            overlay = Libp2pOverlay(
                host,
                pubsub,
                nursery,
                max_queued_per_peer=max_queued_per_peer,
                publish_timeout=publish_timeout,
                relays=relays,
                punching=punching,
                providers=providers,
            )
            if mdns is not None:
                await nursery.start(LanDiscovery(host, mdns, overlay.connect).run)
            try:
                yield overlay
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                overlay._shutdown()
    except BaseException as exc:
        to_raise = after_teardown(exc, body_error)
        if to_raise is exc:
            raise
    else:
        return
    if to_raise is not None:
        raise to_raise
