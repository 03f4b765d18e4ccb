"""Kademlia DHT on the py-libp2p host: a routing table fed by every connection, provider records."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import multiaddr
import trio
from libp2p.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

from dmoa_p2p.overlay._protocol import Provider
from dmoa_p2p.overlay._providers import check_limit, checked_providers, dht_key

_log = logging.getLogger(__name__)

_CHECK_EVERY_S = 1.0
_IDENTIFY_ROUNDS = 10  # rounds to wait for a new connection's identify before giving up on it
_REFRESH_TIMEOUT_S = 15.0
_PROVIDE_TIMEOUT_S = 30.0
_LOOKUP_TIMEOUT_S = 20.0
_QUERY_TIMEOUT_S = 5.0
_PARALLEL_QUERIES = 5
_QUERIED_PEERS = 20  # the k closest peers to a key hold its records


class _AdvertisingHost:
    """The host as py-libp2p's provider store sees it: naming the addresses peers can dial.

    py-libp2p 0.8.1 puts `host.get_addrs()` in the provider records it sends: 0.0.0.0 for a
    node listening on the wildcard (trap G4), and never the relay through which a node behind
    NAT is reached (trap G3). Everything else is the host's.
    """

    def __init__(self, host: Any, advertised: Callable[[], Sequence[str]]) -> None:
        self._host = host
        self._advertised = advertised

    def get_addrs(self) -> list[Any]:
        return [multiaddr.Multiaddr(addr) for addr in self._advertised()]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)


class ProviderRecords:
    """A Kademlia DHT node (server mode when the host is publicly reachable, so that no peer
    keeps in its routing table a node it cannot dial; client mode otherwise) whose routing
    table takes every connected peer that serves the DHT, as identify tells; with provider
    records announced under `dht_key`s and looked up on the peers closest to the key."""

    def __init__(self, host: Any, *, server: bool, advertised: Callable[[], Sequence[str]]) -> None:
        """`server` as the node first takes itself to be; `follow` a later dial-back verdict."""
        self._host = host
        self._dht = KadDHT(host, DHTMode.SERVER if server else DHTMode.CLIENT)
        self._store = self._dht.provider_store
        self._store.host = _AdvertisingHost(host, advertised)
        self._rounds: dict[ID, int] = {}  # connected peers seen: rounds spent on each

    async def follow(self, public: bool) -> None:
        await self._dht.switch_mode(DHTMode.SERVER if public else DHTMode.CLIENT)

    @property
    def routing_table_size(self) -> int:
        return int(self._dht.get_routing_table_size())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with background_trio_service(self._dht), trio.open_nursery() as nursery:
            task_status.started()
            while True:
                if await self._add_connected_peers():
                    nursery.start_soon(self._refresh)
                await trio.sleep(_CHECK_EVERY_S)

    async def provide(self, key: str) -> bool:
        with trio.move_on_after(_PROVIDE_TIMEOUT_S):
            return bool(await self._store.provide(dht_key(key)))
        return False

    async def find(self, key: str, limit: int) -> list[Provider]:
        found: list[tuple[str, list[str]]] = []
        with trio.move_on_after(_LOOKUP_TIMEOUT_S):
            await self._lookup(dht_key(key), found)
        own = str(self._host.get_id().to_base58())
        return checked_providers(found, own_peer_id=own, limit=check_limit(limit))

    async def _lookup(self, key: bytes, found: list[tuple[str, list[str]]]) -> None:
        """Ask the peers closest to `key` for its providers, adding what they say to `found`.

        Not `KadDHT.find_providers`: it answers from the records this node holds whenever
        it holds any (its own, when it provides the key too; others' for 48 h once looked
        up), so that a second lookup never sees a provider that came later.
        """
        found += [_pair(info) for info in self._store.get_providers(key)]
        closest = await self._dht.peer_routing.find_closest_peers_network(key)
        limiter = trio.CapacityLimiter(_PARALLEL_QUERIES)

        async def ask(peer: ID) -> None:
            async with limiter:
                with trio.move_on_after(_QUERY_TIMEOUT_S):
                    providers, _closer = await self._store._get_providers_from_peer_with_closers(
                        peer, key
                    )
                    found.extend(_pair(info) for info in providers)

        async with trio.open_nursery() as nursery:
            for peer in closest[:_QUERIED_PEERS]:
                if peer != self._host.get_id():
                    nursery.start_soon(ask, peer)

    async def _add_connected_peers(self) -> bool:
        """Add the peers connected since the last round that serve the DHT; True when the
        routing table was empty before and is not now (time to fill it by a lookup)."""
        was_empty = self.routing_table_size == 0
        connected = set(self._host.get_connected_peers())
        for peer in [p for p in self._rounds if p not in connected]:
            del self._rounds[peer]  # back in a later round if it reconnects
        peerstore = self._host.get_peerstore()
        for peer in connected:
            rounds = self._rounds.get(peer, 0)
            if rounds >= _IDENTIFY_ROUNDS:
                continue
            protocols = _protocols(peerstore, peer)
            # no protocols yet: identify has not finished, and py-libp2p would add the peer
            # unchecked, client mode or not
            self._rounds[peer] = rounds + 1 if not protocols else _IDENTIFY_ROUNDS
            if str(KAD_PROTOCOL) in protocols:
                await self._dht.add_peer(peer)
        return was_empty and self.routing_table_size > 0

    async def _refresh(self) -> None:
        with trio.move_on_after(_REFRESH_TIMEOUT_S):
            try:
                await self._dht.refresh_routing_table()
            except Exception as exc:  # a peer that left mid-lookup
                _log.debug("refreshing the DHT routing table failed: %r", exc)


def _pair(info: Any) -> tuple[str, list[str]]:
    return str(info.peer_id.to_base58()), [str(addr) for addr in info.addrs]


def _protocols(peerstore: Any, peer: ID) -> list[str]:
    try:
        return [str(p) for p in peerstore.get_protocols(peer) or ()]
    except Exception:  # PeerStoreError: nothing identified yet
        return []
