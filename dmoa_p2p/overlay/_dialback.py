"""Dial-back over py-libp2p: peers dial a node back on fresh connections: is it public?"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID

from dmoa_p2p.overlay._addresses import socket_peer
from dmoa_p2p.overlay._dialback_rules import (
    ANSWER_TIMEOUT_S,
    ASK_PEERS,
    DIAL_TIMEOUT_S,
    LENGTH_BYTES,
    MAX_ADDRS,
    MAX_REQUEST_BYTES,
    PROTOCOL_ID,
    READ_TIMEOUT_S,
    Answer,
    BadMessage,
    CheckSchedule,
    DialAddr,
    Outcome,
    RequestLimits,
    at_ip,
    choose_peers,
    encode_answer,
    encode_request,
    parse_address,
    parse_answer_head,
    parse_request,
    verdict,
)
from dmoa_p2p.overlay._libp2p_direct import dial_failure, error_reason, read_exactly
from dmoa_p2p.overlay._reachability import concrete_addrs, is_private_ip
from dmoa_p2p.overlay._relay import Relays, is_relayed

_log = logging.getLogger(__name__)

_CHECK_EVERY_S = 1.0  # how often the checker looks whether a check is due
_CLOSE_TIMEOUT_S = 1.0
_DIALBACK_GRACE_S = 5.0  # for the listener to see a dial-back end, after its answer came


class _AskedDialBackIsNoMuxFailure(logging.Filter):
    """Work around py-libp2p 0.8.1 logging an ERROR for every dial-back this node asked for.

    Its listener negotiates a muxer on every inbound connection and logs "fail to upgrade
    mux for peer <id>" when one ends after the security handshake, as a dial-back does (it
    must not join the swarm). Demoted to DEBUG for the peers asked, while their answer is due.
    """

    def __init__(self) -> None:
        super().__init__()
        self._asked: dict[str, float] = {}  # peer id: until when (time.monotonic())

    def expect(self, peer_id: str, within_s: float) -> None:
        now = time.monotonic()
        self._asked = {peer: until for peer, until in self._asked.items() if until > now}
        self._asked[peer_id] = now + within_s

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "fail to upgrade mux for peer %s" and isinstance(record.args, tuple):
            until = self._asked.get(str(record.args[0]) if record.args else "", 0.0)
            if time.monotonic() <= until:
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                # handlers without a level of their own would print it anyway
                return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_ASKED = _AskedDialBackIsNoMuxFailure()
logging.getLogger("libp2p.network.swarm").addFilter(_ASKED)


class DialBack:
    """Both sides of `/dmoa-p2p/dialback/1.0.0` on a running host.

    Answering (always): a connected peer names up to MAX_ADDRS of its TCP addresses; this node
    dials those at the IP the peer's direct connection comes from (at most MAX_DIALS) on a new
    TCP connection of its own, never the swarm's, completes the Noise handshake, which proves
    the remote's peer id, and closes it. AutoNAT in py-libp2p 0.8.1 reuses the existing
    connection instead, and so confirms any peer (trap G7). Requests over relayed
    connections are refused (the socket's IP is the relay's), and RequestLimits bounds them.

    Checking (given `relays`, i.e. reachability "auto"): when CheckSchedule says so, ask
    ASK_PEERS directly connected peers, distinct IPs first, and hand the `verdict` to `relays`.
    """

    def __init__(self, host: Any, relays: Relays | None = None) -> None:
        self._host = host
        self._relays = relays
        self._limits = RequestLimits()
        self._schedule = CheckSchedule()
        self._last_asked: dict[str, float] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host.set_stream_handler(TProtocol(PROTOCOL_ID), self._on_request)
        task_status.started()
        while self._relays is not None:
            candidates = self.candidates()
            if self._schedule.due(len(candidates)):
                await self.check(candidates)
            await trio.sleep(_CHECK_EVERY_S)
        await trio.sleep_forever()

    async def check(
        self, candidates: Sequence[tuple[str, str]], addrs: Sequence[str] | None = None
    ) -> bool | None:
        """Ask up to ASK_PEERS of `candidates` ((peer id, IP) pairs) to dial `addrs` (default:
        `own_addrs()`) back; act on and return their verdict (None: undecided)."""
        chosen = choose_peers(candidates, self._last_asked, ASK_PEERS)
        addrs = self.own_addrs() if addrs is None else addrs
        outcomes: list[Outcome] = []
        if not addrs:  # nothing to dial back at (no TCP listen address): no verdict either
            chosen = []

        async def ask_one(peer: str) -> None:
            self._last_asked[peer] = trio.current_time()
            answer = await self.ask(peer, addrs)
            _log.debug("dial-back by %s: %s (%s)", peer, answer.outcome.name, answer.reason)
            outcomes.append(answer.outcome)

        async with trio.open_nursery() as nursery:
            for peer in chosen:
                nursery.start_soon(ask_one, peer)
        public = verdict(outcomes)
        self._schedule.checked(public is not None)
        if public is not None and self._relays is not None:
            self._relays.decide(
                public,
                confirmed_by=outcomes.count(Outcome.REACHABLE),
                failed_by=outcomes.count(Outcome.UNREACHABLE),
            )
        return public

    def own_addrs(self) -> list[str]:
        """The TCP addresses to be dialled back at, public IPs first, at most MAX_ADDRS."""
        found: list[str] = []
        for addr in concrete_addrs([str(a) for a in self._host.get_addrs()]):
            try:
                found.append(parse_address(addr.partition("/p2p/")[0], "").multiaddr)
            except BadMessage:
                continue  # not TCP over IP (a circuit, QUIC): no dial-back for it
        found.sort(key=lambda addr: is_private_ip(addr.split("/")[2]))
        return list(dict.fromkeys(found))[:MAX_ADDRS]

    async def ask(self, peer_id: str, addrs: Sequence[str]) -> Answer:
        """`peer_id`'s answer to a request to dial `addrs` back; REFUSED if none came."""
        _ASKED.expect(peer_id, ANSWER_TIMEOUT_S + _DIALBACK_GRACE_S)
        try:
            with trio.fail_after(ANSWER_TIMEOUT_S):
                stream = await self._host.new_stream(ID.from_base58(peer_id), [PROTOCOL_ID])
                try:
                    await stream.write(encode_request(addrs))
                    outcome, length = parse_answer_head(await read_exactly(stream, 3))
                    reason = (await read_exactly(stream, length)).decode(errors="replace")
                finally:
                    await _close(stream)
        except trio.TooSlowError:
            return Answer(Outcome.REFUSED, f"no answer within {ANSWER_TIMEOUT_S:g} s")
        except Exception as exc:  # no such protocol there, the connection went, a bad answer
            return Answer(Outcome.REFUSED, f"no answer: {error_reason(exc)}")
        return Answer(outcome, reason)

    def candidates(self) -> list[tuple[str, str]]:
        """Connected peers that speak the protocol over a direct connection, with its IP."""
        peerstore, found = self._host.get_peerstore(), []
        for peer in self._host.get_connected_peers():
            ip = _direct_ip(self._host, peer)
            try:
                speaks = PROTOCOL_ID in [str(p) for p in peerstore.get_protocols(peer)]
            except Exception:  # PeerStoreError: not identified yet
                speaks = False
            if ip is not None and speaks:
                found.append((str(peer.to_base58()), ip))
        return found

    async def _on_request(self, stream: Any) -> None:
        """libp2p's handler: answer one request, then close the stream; never raises."""
        try:
            peer = stream.muxed_conn.peer_id
            with trio.fail_after(ANSWER_TIMEOUT_S):  # _answer's own bounds, with room
                answer = await self._answer(peer, stream)
                await stream.write(encode_answer(answer))
            await _close(stream)
        except Exception as exc:
            _log.debug("dial-back request failed: %r", exc)
            shielded = trio.CancelScope(shield=True)
            with shielded, trio.move_on_after(_CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
                await stream.reset()

    async def _answer(self, peer: ID, stream: Any) -> Answer:
        observed = _direct_ip(self._host, peer, stream.muxed_conn)
        if observed is None:
            return Answer(Outcome.REFUSED, "refused: not over a direct connection")
        if (limited := self._limits.admit(peer)) is not None:
            return Answer(Outcome.REFUSED, limited)
        try:
            with trio.fail_after(READ_TIMEOUT_S):
                length = int.from_bytes(await read_exactly(stream, LENGTH_BYTES), "big")
                if length > MAX_REQUEST_BYTES:  # refused unread
                    return Answer(Outcome.REFUSED, f"bad request: over {MAX_REQUEST_BYTES} bytes")
                body = await read_exactly(stream, length)
            try:
                addrs = parse_request(body, str(peer.to_base58()))
            except BadMessage as exc:
                return Answer(Outcome.REFUSED, f"bad request: {exc}")
            return await self._dial_all(peer, addrs, observed)
        finally:
            self._limits.release(peer)

    async def _dial_all(self, peer: ID, addrs: list[DialAddr], observed: str) -> Answer:
        targets = at_ip(addrs, observed)
        if not targets:
            named = ", ".join(addr.multiaddr for addr in addrs)
            return Answer(
                Outcome.UNREACHABLE,
                f"refused to dial {named}: not at {observed}, the IP this connection comes from",
            )
        failures = []
        for addr in targets:
            failure = await _dial_back(self._host, peer, addr)
            if failure is None:
                return Answer(Outcome.REACHABLE, f"dialled back at {addr.multiaddr}")
            failures.append(f"{addr.multiaddr}: {failure}")
        return Answer(Outcome.UNREACHABLE, "no dial-back: " + "; ".join(failures))


async def _dial_back(host: Any, peer: ID, addr: DialAddr) -> str | None:
    """None if a new TCP connection to `addr` reaches `peer` (it proves its id in the Noise
    handshake), else why not. The swarm never sees the connection: a swarm dial would reuse
    the open one, and a fresh swarm connection would join (or replace) it."""
    with trio.move_on_after(DIAL_TIMEOUT_S):
        try:
            tcp = await trio.open_tcp_stream(addr.ip, addr.port)
        except OSError as exc:
            return dial_failure(exc)
        raw = RawConnection(TrioTCPStream(tcp), True)
        try:
            secured = await host.get_network().upgrader.upgrade_security(raw, True, peer)
        except Exception as exc:  # not our peer there (another id), or not libp2p at all
            return f"security handshake failed: {error_reason(exc)}"
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
                await _close(raw)
        await _close(secured)
        return None
    return f"no answer within {DIAL_TIMEOUT_S:g} s"


def _direct_ip(host: Any, peer: ID, muxed: Any = None) -> str | None:
    """The IP `peer`'s direct connection (the one `muxed` names, if given) comes from, as
    its socket says; None if there is none, or it is relayed."""
    for connection in host.get_network().get_connections(peer):
        if muxed is not None and getattr(connection, "muxed_conn", None) is not muxed:
            continue
        if not is_relayed(connection) and (remote := socket_peer(connection)) is not None:
            return remote[0]
    return None


async def _close(closable: Any) -> None:
    try:
        await closable.close()
    except Exception as exc:
        _log.debug("closing failed: %r", exc)
