"""Circuit relay v2 on the py-libp2p host: offering the relay, keeping reservations, dialling."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import multiaddr
import trio
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from dmoa_p2p.overlay._addresses import socket_peer
from dmoa_p2p.overlay._protocol import Reachability
from dmoa_p2p.overlay._reachability import is_private_ip

_log = logging.getLogger(__name__)

CIRCUIT_DURATION_S = 20 * 60  # why these limits: see `Relays`
CIRCUIT_DATA_BYTES = 64 * 2**20
CIRCUITS_PER_RESERVATION = 16  # one per peer that reaches it: max_dialed_peers is 16
MAX_RESERVATIONS = 32
# renewed by py-libp2p 30 s before it lapses (transport.RESERVATION_REFRESH_MARGIN)
RESERVATION_TTL_S = 15 * 60
RELAY_LIMITS = RelayLimits(
    duration=CIRCUIT_DURATION_S,
    data=CIRCUIT_DATA_BYTES,
    max_circuit_conns=CIRCUITS_PER_RESERVATION,
    max_reservations=MAX_RESERVATIONS,
    reservation_ttl=RESERVATION_TTL_S,
)
RESERVED_RELAYS = 2  # a second one keeps the node reachable while the first is replaced
_CHECK_EVERY_S = 1.0
_FIRST_RETRY_S = 5.0
_MAX_RETRY_S = 300.0
_RESERVE_TIMEOUT_S = 10.0
_ADDR_TTL_S = 600


class _ClosedHopStreamIsNoError(logging.Filter):
    """Work around py-libp2p 0.8.1 logging an ERROR on the relay for every reservation.

    Its hop handler reads on after a RESERVE and logs "Error reading from hop stream" with an
    empty reason when the client closes the stream, as py-libp2p's own renewal does: that
    end of stream is the normal one, demoted here to DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Error reading from hop stream from") and message.endswith(": "):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


logging.getLogger("libp2p.relay.circuit_v2.protocol").addFilter(_ClosedHopStreamIsNoError())


def is_circuit(addr: Any) -> bool:
    return "/p2p-circuit" in str(addr)


def is_relayed(connection: Any) -> bool:
    return connection.get_connection_type() is ConnectionType.RELAYED


class Relays:
    """Circuit relay v2 for one host: every node accepts relayed connections (stop) and can
    dial `/p2p-circuit` addresses; a public one also relays for others (hop, within
    RELAY_LIMITS); a private one keeps reservations on up to RESERVED_RELAYS relays and
    names its circuit addresses in `circuit_addrs`. Which one it is can change at run time
    (`decide`, from a dial-back verdict).

    The limits. A circuit carries everything between two nodes behind NAT until something
    better exists: presence (about 1 KiB per peer every 2 s, for every peer the mesh
    forwards) and MoA tasks and proposals of up to wire.limits.MAX_ENVELOPE_BYTES (512 KiB)
    each. go-libp2p's 2 min / 128 KiB would cut a circuit within one augmented prompt;
    py-libp2p's 1 h / 1 GiB lets one pair hold a volunteer's uplink for an hour. 64 MiB is
    over a hundred envelope-sized messages, or about an hour of a 16-peer mesh's presence;
    20 min bounds how long one circuit holds the relay, after which the pair redials (a new
    circuit, with new limits). A relay keeps at most MAX_RESERVATIONS nodes and
    CIRCUITS_PER_RESERVATION circuits into each: at most 512 circuits at once.
    """

    def __init__(
        self,
        host: Any,
        *,
        public: bool,
        guessed: bool = False,
        relay_service: bool = True,
        bootstrap: Sequence[str] = (),
    ) -> None:
        self._host = host
        self._relay_service = relay_service
        self.offers_hop = public and relay_service
        self.reserves = not public
        # how `public` was decided: "configured", "guess" (from addresses), "dial-back"
        self.source = "guess" if guessed else "configured"
        self.confirmed_by = self.failed_by = 0  # peers, in the check that decided
        self._protocol = CircuitV2Protocol(host, limits=RELAY_LIMITS, allow_hop=self.offers_hop)
        # not RelayRole.CLIENT: with it py-libp2p makes a new reservation on every circuit
        # dial; no HOP either: the transport ignores it, the protocol's handler is the hop
        self._transport = CircuitV2Transport(
            host, self._protocol, RelayConfig(roles=RelayRole.STOP, limits=RELAY_LIMITS)
        )
        # a relay at a private address helps only where peers could dial each other anyway
        self._bootstrap = [_peer_of(addr) for addr in bootstrap if not _at_private_ip(addr)]
        self._reserved: dict[ID, str] = {}  # relay: its address, as this node dialled it
        self._retry_at: dict[ID, tuple[float, float]] = {}  # relay: (when, backoff)
        self._nursery: trio.Nursery | None = None  # run()'s
        # told each new dial-back verdict (public or not), before peers are
        self.verdict_followers: list[Callable[[bool], Awaitable[None]]] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with background_trio_service(self._protocol), trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:  # the protocol's handlers go when its service stops
                if self.reserves:
                    self._forget_lost()
                    for relay in self._candidates():
                        if len(self._reserved) >= RESERVED_RELAYS or not self.reserves:
                            break
                        await self._reserve(relay, nursery)
                if not self.reserves:  # also one granted while `decide` made it public
                    self._drop_reservations()
                await trio.sleep(_CHECK_EVERY_S)

    def decide(self, public: bool, *, confirmed_by: int, failed_by: int) -> None:
        """Act on a dial-back verdict: offer the hop (unless the relay service is off) and drop
        the reservations once public; stop offering it and seek reservations once private."""
        self.source, self.confirmed_by, self.failed_by = "dial-back", confirmed_by, failed_by
        if public == (not self.reserves):
            return
        _log.info("dial-back: this node is %s", "public" if public else "private")
        self.reserves = not public
        self._set_hop(public and self._relay_service)
        if public:
            self._drop_reservations()
        if self._nursery is not None:
            self._nursery.start_soon(self._follow_verdict, public)

    async def _follow_verdict(self, public: bool) -> None:
        for follow in self.verdict_followers:
            await follow(public)
        # peers learn the hop's (and the DHT server's) coming or going from identify;
        # py-libp2p pushes it on listen only, so push now (its private method: no public one
        # exists in 0.8.1)
        await _push_identify(self._host)

    def reachability(self) -> Reachability:
        return Reachability(
            public=not self.reserves,
            relaying=self.offers_hop,
            relays=self.relay_addrs(),
            source=self.source,
            confirmed_by=self.confirmed_by,
            failed_by=self.failed_by,
        )

    def _drop_reservations(self) -> None:
        """Let every reservation lapse: py-libp2p renews only those it still holds."""
        for relay in list(self._reserved):
            del self._reserved[relay]
            self._transport._reservations.pop(relay, None)
            self._transport._reservation_proofs.pop(relay, None)
        self._retry_at.clear()

    def _set_hop(self, offer: bool) -> None:
        """Switch the hop handler: py-libp2p's CircuitV2Protocol reads `allow_hop` only when it
        starts (to register the handler) and stops (to remove it), so toggle both here.
        Circuits already open run out within RELAY_LIMITS."""
        if offer == self.offers_hop:
            return
        self.offers_hop = self._protocol.allow_hop = offer
        if offer:
            handler = self._protocol._handle_hop_stream
            self._host.set_stream_handler(TProtocol(HOP_PROTOCOL), handler)
        else:
            self._host.remove_stream_handler(TProtocol(HOP_PROTOCOL))

    def circuit_addrs(self) -> tuple[str, ...]:
        """`<relay addr>/p2p-circuit/p2p/<own id>` for each relay holding a reservation."""
        own = self._host.get_id().to_base58()
        return tuple(f"{addr}/p2p-circuit/p2p/{own}" for addr in self._reserved.values())

    def relay_addrs(self) -> tuple[str, ...]:
        return tuple(self._reserved.values())

    def awaiting_reservation(self) -> bool:
        """Whether a reservation is being sought from a connected relay that may grant it."""
        if not self.reserves or len(self._reserved) >= RESERVED_RELAYS:
            return False
        # a bootstrap peer not reached yet counts: a presence naming the home address would
        # still reach peers later (GossipSub's message cache), and they would dial in vain
        connected = set(self._host.get_connected_peers())
        unreached = [p for p in self._bootstrap if p not in connected and p not in self._retry_at]
        return bool(unreached or self._candidates())

    async def dial(self, addr: Any) -> None:
        """Connect through the relay `addr` names; host.connect() would skip the address
        (py-libp2p 0.8.1 filters /p2p-circuit addresses out of every swarm dial)."""
        relay_part, _, target = str(addr).partition("/p2p-circuit/p2p/")
        relay = info_from_p2p_addr(multiaddr.Multiaddr(relay_part))
        if relay.peer_id not in self._host.get_connected_peers():
            # else the transport's first way (the stored circuit address) opens a stream to a
            # relay it knows no address of, fails, and only then dials the relay
            await self._host.connect(relay)
        # the transport tries the peer's stored circuit addresses first
        self._host.get_peerstore().add_addr(ID.from_base58(target), addr, _ADDR_TTL_S)
        await self._transport.dial(addr)

    def _forget_lost(self) -> None:
        """Drop reservations whose relay went away or that lapsed unrenewed."""
        connected = set(self._host.get_connected_peers())
        for relay in list(self._reserved):
            if relay not in connected or relay not in self._transport._reservations:
                _log.info("reservation on relay %s lost", relay)
                del self._reserved[relay]
                self._transport._reservations.pop(relay, None)

    def _candidates(self) -> list[ID]:
        """Connected bootstrap peers, then connected peers identify says offer the hop protocol.

        Read afresh each round: py-libp2p's RelayDiscovery caches a peer's protocols when first
        asked, an empty list if identify had not finished, and never finds that relay again.
        """
        peerstore, now = self._host.get_peerstore(), trio.current_time()
        connected = list(self._host.get_connected_peers())
        hop = [peer for peer in connected if HOP_PROTOCOL in _protocols(peerstore, peer)]
        ordered = [peer for peer in self._bootstrap if peer in connected] + hop
        return [
            peer
            for peer in dict.fromkeys(ordered)
            if peer not in self._reserved and self._retry_at.get(peer, (0.0, 0.0))[0] <= now
        ]

    async def _reserve(self, relay: ID, nursery: trio.Nursery) -> None:
        address = _relay_address(self._host, relay)
        ok = False
        if address is not None:
            with trio.move_on_after(_RESERVE_TIMEOUT_S):
                try:
                    stream = await self._host.new_stream(relay, [TProtocol(HOP_PROTOCOL)])
                    # renewed in `nursery` by the transport, each time on a new stream
                    ok = await self._transport.reserve(stream, relay, nursery)
                    await stream.close()
                except Exception as exc:  # no hop protocol there, or the connection went
                    _log.debug("reservation on %s failed: %r", relay, exc)
        if ok and address is not None:
            _log.info("reserved a slot on relay %s (%s)", relay, address)
            self._reserved[relay] = address
            self._retry_at.pop(relay, None)
            return
        backoff = min(self._retry_at.get(relay, (0.0, _FIRST_RETRY_S / 2))[1] * 2, _MAX_RETRY_S)
        self._retry_at[relay] = (trio.current_time() + backoff, backoff)


async def _push_identify(host: Any) -> None:
    try:
        with trio.move_on_after(_RESERVE_TIMEOUT_S):
            await host._push_identify_to_all_peers()
    except Exception as exc:  # best effort: peers also identify anew when they reconnect
        _log.debug("identify push failed: %r", exc)


def _protocols(peerstore: Any, peer: ID) -> list[str]:
    try:
        return [str(p) for p in peerstore.get_protocols(peer)]
    except Exception:  # PeerStoreError: nothing identified yet
        return []


def _relay_address(host: Any, relay: ID) -> str | None:
    """The relay's address as this node's direct connection to it reached it, if public."""
    for connection in host.get_network().get_connections(relay):
        if is_relayed(connection):
            continue  # its socket is the relay's: the address would name the wrong host
        remote = socket_peer(connection)
        if remote is None or is_private_ip(remote[0]):
            continue
        ip, port = remote
        family = "ip6" if ":" in ip else "ip4"
        return f"/{family}/{ip}/tcp/{port}/p2p/{relay.to_base58()}"
    return None


def _at_private_ip(addr: str) -> bool:
    match = re.match(r"/(ip4|ip6)/([^/]+)/", addr)
    return match is None or is_private_ip(match[2])


def _peer_of(addr: str) -> ID:
    return ID.from_base58(str(multiaddr.Multiaddr(addr).get_peer_id()))
