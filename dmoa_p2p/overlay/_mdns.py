"""mDNS on the local network: advertise this node's addresses, dial the dmoa-p2p nodes heard of."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.discovery.mdns.broadcaster import PeerBroadcaster
from libp2p.discovery.mdns.listener import PeerListener
from zeroconf import Zeroconf

from dmoa_p2p.overlay._lan_peers import HeardPeers, lan_addrs, mdns_service_type
from dmoa_p2p.overlay._protocol import OverlayError
from dmoa_p2p.overlay._reachability import concrete_addrs

_log = logging.getLogger(__name__)

MAX_PEERS = 16  # mDNS dials no more once this many connections are open, however found
MAX_CONCURRENT_DIALS = 3
_CHECK_EVERY_S = 1.0
_STOP_TIMEOUT_S = 5.0

Connect = Callable[[str], Awaitable[str]]


class LanDiscovery:
    """Advertise the host on mDNS under service `name` and dial the peers heard there.

    py-libp2p's own mDNS (`new_host(enable_mDNS=True)`) is not used: it advertises the
    listen addresses as they are, 0.0.0.0 for a node on the wildcard (trap G4: peers would
    dial themselves); it tells what it hears to one process-wide event, from zeroconf's
    thread, so that every node in a process would hear what any of them heard; and it
    dials no one. Here the addresses advertised are `concrete_addrs`; what is heard comes back to
    this trio run, to this node only; dials are bounded and paced by `HeardPeers`.
    """

    def __init__(self, host: Any, name: str, connect: Connect) -> None:
        self._host = host
        self._type = mdns_service_type(name)
        self._connect = connect
        self.peers = HeardPeers(host.get_id().to_base58(), max_dials=MAX_CONCURRENT_DIALS)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            zeroconf = await trio.to_thread.run_sync(Zeroconf)
        except OSError as exc:  # no multicast-capable interface
            _log.warning("mDNS is off: %s", exc)
            task_status.started()
            return
        instance = f"{secrets.token_hex(16)}.{self._type}"
        token = trio.lowlevel.current_trio_token()
        addrs = lan_addrs(concrete_addrs([str(a) for a in self._host.get_addrs()]))
        own = str(self._host.get_id().to_base58())
        try:
            listener = _Listener(self, zeroconf, instance, token)
            broadcaster = PeerBroadcaster(zeroconf, self._type, instance, own, 0, addrs)
        except BaseException:
            zeroconf.close()
            raise
        try:
            async with trio.open_nursery() as nursery:
                # registering probes the name and announces it: 1.5 s, not worth waiting for;
                # not abandoned when cancelled, as unregistering meanwhile would race it
                nursery.start_soon(trio.to_thread.run_sync, broadcaster.register)
                task_status.started()
                await self._dial_forever(nursery)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_STOP_TIMEOUT_S):
                await trio.to_thread.run_sync(
                    _stop, zeroconf, broadcaster, listener, abandon_on_cancel=True
                )

    def heard_of(self, instance: str, peer_id: str, addrs: list[str]) -> None:
        if self.peers.heard_of(instance, peer_id, addrs):
            _log.debug("mDNS: heard of %s at %s", peer_id, self.peers.addrs(peer_id))

    def lost(self, instance: str) -> None:
        self.peers.lost(instance)

    async def _dial_forever(self, nursery: trio.Nursery) -> None:
        while True:
            connected = {str(p.to_base58()) for p in self._host.get_connected_peers()}
            room = MAX_PEERS - len(connected) - len(self.peers.dialling)
            for peer_id in self.peers.due(trio.current_time(), connected, room):
                nursery.start_soon(self._dial, peer_id)
            await trio.sleep(_CHECK_EVERY_S)

    async def _dial(self, peer_id: str) -> None:
        connected = False
        try:
            for addr in self.peers.addrs(peer_id):
                try:
                    await self._connect(addr)
                except OverlayError as exc:
                    _log.debug("mDNS: cannot dial %s: %s", addr, exc)
                    continue
                connected = True
                _log.info("mDNS: connected to %s (%s)", peer_id, addr)
                break
        finally:
            self.peers.attempted(peer_id, connected, trio.current_time())


class _Listener(PeerListener):  # type: ignore[misc]
    """py-libp2p's mDNS listener, handing what it hears to one `LanDiscovery` in its trio run
    rather than to the process-wide `peerDiscovery` event and the peerstore (from zeroconf's
    thread, where it calls back)."""

    def __init__(self, owner: LanDiscovery, zeroconf: Any, instance: str, token: Any) -> None:
        self._owner = owner
        self._token = token
        service_type = instance.split(".", 1)[1]
        super().__init__(owner._host.get_peerstore(), zeroconf, service_type, instance)

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        if name == self.service_name or type_ != self.service_type:
            return
        info = self._get_service_info_with_retry(zc, type_, name)
        peer = self._extract_peer_info(info) if info is not None else None
        if peer is not None:
            addrs = [str(addr) for addr in peer.addrs]
            self._hand_over(self._owner.heard_of, name, str(peer.peer_id), addrs)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.add_service(zc, type_, name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        if type_ == self.service_type:
            self._hand_over(self._owner.lost, name)

    def _hand_over(self, call: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the node stopped meanwhile
            self._token.run_sync_soon(call, *args)


def _stop(zeroconf: Zeroconf, broadcaster: PeerBroadcaster, listener: _Listener) -> None:
    """Withdraw the record (peers forget this node at once) and close zeroconf's sockets."""
    broadcaster.unregister()
    listener.stop()
    zeroconf.close()
