"""Dial-back between real py-libp2p overlays on 127.0.0.1: who is confirmed reachable, who is
not, and what an answering peer refuses to do."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.overlay import Overlay, _relay, open_libp2p_overlay
from dmoa_p2p.overlay._dialback import DialBack
from dmoa_p2p.overlay._dialback_rules import (
    DIAL_TIMEOUT_S,
    PER_PEER_REQUESTS,
    PROTOCOL_ID,
    Outcome,
)
from dmoa_p2p.overlay._libp2p_holepunch import HolePunching
from dmoa_p2p.testing import wait_for

pytestmark = pytest.mark.integration

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
# a check starts within a second of a node having two identified peers
CHECKED_S = 15.0
HOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/hop"  # offered by a node that relays


def host_of(overlay: Overlay) -> Any:
    return overlay._host  # type: ignore[attr-defined]


def port_of(overlay: Overlay) -> int:
    """The port it listens on (which it may not advertise while it seeks a relay)."""
    return int(str(host_of(overlay).get_addrs()[0]).split("/")[4])


@asynccontextmanager
async def overlays(count: int, **options: Any) -> AsyncIterator[list[Overlay]]:
    """`count` overlays on 127.0.0.1, each connected to every other."""
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                open_libp2p_overlay(NodeIdentity.generate(), LOCAL, **options)
            )
            for _ in range(count)
        ]
        for i, node in enumerate(nodes):
            for other in nodes[i + 1 :]:
                await node.connect(other.listen_addrs[0])
        yield nodes


Handler = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def tcp_listener(ip: str, on_accept: Handler) -> AsyncIterator[int]:
    """A plain TCP server at `ip` running `on_accept` per connection; yields its port."""
    serve = functools.partial(trio.serve_tcp, on_accept, 0, host=ip)
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(serve)
        yield int(listeners[0].socket.getsockname()[1])
        nursery.cancel_scope.cancel()


async def ready_to_ask(asker: Overlay, peers: list[Overlay]) -> None:
    """Until identify has told `asker` that each of `peers` answers dial-backs."""
    ids = {p.peer_id for p in peers}
    await wait_for(lambda: ids <= {peer for peer, _ip in DialBack(host_of(asker)).candidates()})


def protocols(asker: Overlay, peer: Overlay) -> list[str]:
    """The protocols identify says `peer` speaks, as `asker` knows them."""
    host = host_of(asker)
    for known in host.get_connected_peers():
        if known.to_base58() == peer.peer_id:
            return [str(p) for p in host.get_peerstore().get_protocols(known)]
    return []


async def test_a_listening_node_is_confirmed_public_by_two_peers_dialling_back() -> None:
    with trio.fail_after(30):
        async with overlays(3) as nodes:
            a, b, c = nodes
            # 127.0.0.1 is a private address: the first guess is "behind NAT"
            guess = a.reachability
            assert (guess.public, guess.source, guess.relaying) == (False, "guess", False)
            await wait_for(lambda: all(n.reachability.source == "dial-back" for n in nodes))
            for node in nodes:
                reach = node.reachability
                assert (reach.public, reach.relaying) == (True, True), reach
                assert (reach.confirmed_by, reach.failed_by) == (2, 0), reach
            # a now relays for others and serves the DHT (it began as a client, by its guess),
            # and identify has told its peers so
            await wait_for(lambda: HOP_PROTOCOL in protocols(b, a))
            await wait_for(lambda: str(KAD_PROTOCOL) in protocols(b, a))
            assert c.reachability.to_json()["source"] == "dial-back"


async def test_a_node_whose_advertised_port_is_dead_is_found_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # everything here is on 127.0.0.1, which a relay normally must not be on
    monkeypatch.setattr(_relay, "is_private_ip", lambda ip: False)
    with trio.fail_after(30):
        async with (
            overlays(2, reachability="public") as peers,
            open_libp2p_overlay(NodeIdentity.generate(), LOCAL, reachability="public") as x,
        ):
            for peer in peers:
                await x.connect(peer.listen_addrs[0])
            await ready_to_ask(x, peers)
            with trio.socket.socket() as dead:
                await dead.bind(("127.0.0.1", 0))  # bound, never listening: connections refused
                dead_addr = f"/ip4/127.0.0.1/tcp/{dead.getsockname()[1]}"
                asker = DialBack(host_of(x), x._relays)  # type: ignore[attr-defined]
                answer = await asker.ask(peers[0].peer_id, [dead_addr])
                assert answer.outcome is Outcome.UNREACHABLE, answer
                assert answer.reason.endswith(f"{dead_addr}: Connection refused")
                # a port where another peer answers: the handshake proves the wrong id
                other = f"/ip4/127.0.0.1/tcp/{port_of(peers[1])}"
                answer = await asker.ask(peers[0].peer_id, [other])
                assert answer.outcome is Outcome.UNREACHABLE, answer
                assert "security handshake failed" in answer.reason, answer
                # the verdict, from both peers: private, so it stops relaying and seeks relays
                assert x.reachability.relaying
                assert await asker.check(asker.candidates(), [dead_addr]) is False
                reach = x.reachability
                assert (reach.public, reach.relaying, reach.source) == (False, False, "dial-back")
                assert (reach.confirmed_by, reach.failed_by) == (0, 2)
                # it reserves on its peers (which relay) and names the circuits as its way in
                await wait_for(lambda: len(x.reachability.relays) == 2)
                assert all("/p2p-circuit/" in addr for addr in x.listen_addrs), x.listen_addrs
                # its own port is alive: the same peers confirm it, it relays again and lets
                # its reservations lapse
                assert await asker.check(asker.candidates()) is True
                reach = x.reachability
                assert (reach.public, reach.relaying, reach.relays) == (True, True, ())
                assert x.listen_addrs == (f"/ip4/127.0.0.1/tcp/{port_of(x)}/p2p/{x.peer_id}",)


async def test_a_request_to_dial_another_ip_than_the_requesters_is_refused() -> None:
    accepted: dict[str, int] = {"127.0.0.1": 0, "127.0.0.2": 0}

    def counting(ip: str) -> Handler:
        async def on_accept(stream: trio.SocketStream) -> None:
            accepted[ip] += 1
            await stream.aclose()

        return on_accept

    with trio.fail_after(30):
        async with (
            overlays(2, reachability="public") as (a, x),
            tcp_listener("127.0.0.2", counting("127.0.0.2")) as elsewhere,
            tcp_listener("127.0.0.1", counting("127.0.0.1")) as here,
        ):
            await ready_to_ask(x, [a])
            asker = DialBack(host_of(x))
            answer = await asker.ask(a.peer_id, [f"/ip4/127.0.0.2/tcp/{elsewhere}"])
            assert answer.outcome is Outcome.UNREACHABLE, answer
            assert answer.reason == (
                f"refused to dial /ip4/127.0.0.2/tcp/{elsewhere}: not at 127.0.0.1, the IP this "
                "connection comes from"
            )
            # the same at the requester's own IP is dialled (and is no libp2p node)
            answer = await asker.ask(a.peer_id, [f"/ip4/127.0.0.1/tcp/{here}"])
            assert "security handshake failed" in answer.reason, answer
            assert accepted == {"127.0.0.1": 1, "127.0.0.2": 0}
            # a malformed request is refused unread, and says nothing of reachability
            answer = await asker.ask(a.peer_id, ["/dns4/example.org/tcp/80"])
            assert answer.outcome is Outcome.REFUSED
            assert answer.reason.startswith("bad request: '/dns4/example.org/tcp/80' is not")


async def test_an_over_limit_requester_is_refused() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()  # accepts, never completes a handshake

    with trio.fail_after(40):
        async with (
            overlays(2, reachability="public") as (a, x),
            tcp_listener("127.0.0.1", silent) as stalling,
        ):
            await ready_to_ask(x, [a])
            asker = DialBack(host_of(x))
            answers = []

            async def ask(addr: str) -> None:
                answers.append(await asker.ask(a.peer_id, [addr]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, f"/ip4/127.0.0.1/tcp/{stalling}")
                await trio.sleep(0.5)  # the first is being dialled back, slowly
                nursery.start_soon(ask, x.listen_addrs[0])
            slow, second = answers[1], answers[0]
            assert second.outcome is Outcome.REFUSED, second
            assert "already under way" in second.reason
            assert slow.outcome is Outcome.UNREACHABLE
            assert slow.reason.endswith(f"no answer within {DIAL_TIMEOUT_S:g} s"), slow
            # two taken on so far (the refusal did not count); the rest of the window's share
            for _ in range(PER_PEER_REQUESTS - 1):
                answer = await asker.ask(a.peer_id, [x.listen_addrs[0]])
                assert answer.outcome is Outcome.REACHABLE, answer
            answer = await asker.ask(a.peer_id, [x.listen_addrs[0]])
            assert answer.outcome is Outcome.REFUSED
            assert answer.reason.startswith(f"rate limited: {PER_PEER_REQUESTS} requests per")


async def test_a_request_over_a_relayed_connection_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # everything here is on 127.0.0.1, which a relay normally must not be on
    monkeypatch.setattr(_relay, "is_private_ip", lambda ip: False)

    async def no_punch(self: HolePunching, peer: object) -> bool:
        return False  # else the link is direct within milliseconds, on loopback

    monkeypatch.setattr(HolePunching, "initiate_hole_punch", no_punch)
    with trio.fail_after(30):
        async with open_libp2p_overlay(NodeIdentity.generate(), LOCAL, reachability="public") as r:
            (relay_addr,) = r.listen_addrs
            behind = open_libp2p_overlay(
                NodeIdentity.generate(), LOCAL, reachability="private", bootstrap=[relay_addr]
            )
            async with behind as b, open_libp2p_overlay(NodeIdentity.generate(), LOCAL) as c:
                await b.connect(relay_addr)
                await wait_for(lambda: "/p2p-circuit/" in str(b.listen_addrs))
                await c.connect(b.listen_addrs[0])
                asker = DialBack(host_of(c))
                await wait_for(lambda: PROTOCOL_ID in protocols(c, b))
                assert b.peer_id not in dict(asker.candidates())  # never asked
                answer = await asker.ask(b.peer_id, [f"/ip4/127.0.0.1/tcp/{port_of(c)}"])
                assert answer.outcome is Outcome.REFUSED, answer
                assert answer.reason == "refused: not over a direct connection"
