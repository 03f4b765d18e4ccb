"""A dmoa-p2p node: identity, overlay, signed presence and the peer view, in one trio service."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import cattrs
import trio

from dmoa_p2p.admission import (
    AdmissionContext,
    AdmissionPolicy,
    AdmissionRefused,
    Decision,
    OperatingPoint,
)
from dmoa_p2p.backends import Backend, TextCallback
from dmoa_p2p.config import ConfigError, NodeConfig, describe_error
from dmoa_p2p.gossip import GossipPolicy
from dmoa_p2p.identity import NodeIdentity, load_or_create_identity
from dmoa_p2p.moa import Answer, MoaEngine, PeerLoad, QueryRequest
from dmoa_p2p.node._dialer import PeerDialer, peer_id_of_multiaddr
from dmoa_p2p.node._peer_view import PeerView
from dmoa_p2p.overlay import Overlay, OverlayError, open_libp2p_overlay
from dmoa_p2p.queue import InferenceQueue
from dmoa_p2p.registry import load_plugin
from dmoa_p2p.wire import (
    PROTOCOL_VERSION,
    Envelope,
    Message,
    MessageGate,
    Presence,
    WireError,
    decode_envelope,
    seal,
)

PRESENCE_TOPIC = f"dmoa-p2p/v{PROTOCOL_VERSION}/presence"

log = logging.getLogger(__name__)

OverlayOpener = Callable[[NodeIdentity, Sequence[str]], AbstractAsyncContextManager[Overlay]]


def load_admission(name: str, options: dict[str, str]) -> AdmissionPolicy:
    """An admission plugin: an attrs class whose fields are its options."""
    cls = load_plugin("admission", name)
    try:
        policy: AdmissionPolicy = _options.structure(options, cls)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(
            cattrs.transform_error(exc, f"admission {name}", format_exception=describe_error)
        )
        raise ConfigError(f"bad admission options: {problems}") from exc
    return policy


_options = cattrs.Converter(forbid_extra_keys=True)


def _only_cancelled(exc: BaseException) -> bool:
    """trio.Cancelled, alone or as the only kind in a nursery's exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


def _load_of(p: Presence) -> PeerLoad:
    return PeerLoad(
        p.peer_id,
        p.mean_service_s,
        p.queue_length,
        p.queue_capacity,
        p.arrival_rate,
        p.service_var_s2,
        p.service_samples,
        p.admitted_rate,
    )


class Node:
    """One participant of the overlay. Build it with `open_node` or run it with `serve_node`."""

    def __init__(
        self,
        config: NodeConfig,
        identity: NodeIdentity,
        overlay: Overlay,
        backend: Backend,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.overlay = overlay
        self.backend = backend
        self.wall_clock = wall_clock
        self.gate = MessageGate(clock=wall_clock)
        self.peer_view = PeerView(identity.peer_id, config.missed_presence_limit)
        self.queue = InferenceQueue(backend, config.queue_capacity)
        self.gossip: GossipPolicy = load_plugin("gossip", config.gossip)()
        self.admission = load_admission(config.admission, config.admission_options)
        self.outcomes: Counter[str] = Counter()
        # called with every answer to this node's users (e.g. to observe latencies)
        self.answer_listeners: list[Callable[[Answer], None]] = []
        self.http_urls: tuple[str, ...] = ()  # the OpenAI-compatible API, when it is on
        self.engine = MoaEngine(
            identity.peer_id,
            self.queue,
            self._send_moa,
            self._peer_loads,
            lambda peer_id: self.gossip.can_reach(self.overlay, peer_id),
            rng,
        )
        self.events: Counter[str] = Counter()
        self._dialer: PeerDialer | None = None

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        return self.overlay.listen_addrs

    def live_peer_ids(self) -> frozenset[str]:
        return self.peer_view.live_ids(trio.current_time())

    def presence(self) -> Presence:
        """This node's presence as it advertises it now."""
        return Presence(
            peer_id=self.peer_id,
            listen_addrs=self.listen_addrs,
            models=(self.backend.model_name,),
            mean_service_s=self.queue.load.mean_service_s,
            service_var_s2=self.queue.load.service_var_s2,
            service_samples=self.queue.load.service_samples,
            queue_length=self.queue.length,
            queue_capacity=self.queue.capacity,
            arrival_rate=self.queue.load.arrival_rate,
            admitted_rate=self.queue.load.admitted_rate,
            interval_s=self.config.presence_interval_s,
        )

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: who we are, whom we see, what we rejected."""
        now = trio.current_time()
        return {
            "peer_id": self.peer_id,
            "listen_addrs": list(self.listen_addrs),
            "connected_peers": sorted(self.overlay.connected_peers()),
            "peers": [
                {
                    "peer_id": rec.peer_id,
                    "listen_addrs": list(rec.presence.listen_addrs),
                    "models": list(rec.presence.models),
                    "queue_length": rec.presence.queue_length,
                    "queue_capacity": rec.presence.queue_capacity,
                    "mean_service_s": rec.presence.mean_service_s,
                    "arrival_rate": rec.presence.arrival_rate,
                    "admitted_rate": rec.presence.admitted_rate,
                    "last_seen_s": round(now - rec.last_seen, 3),
                }
                for rec in self.peer_view.live(now)
            ],
            "messages": {
                "accepted": self.gate.accepted,
                "rejected": {str(reason): n for reason, n in sorted(self.gate.rejections.items())},
            },
            "events": dict(sorted(self.events.items())),
            "queue": {
                "length": self.queue.length,
                "capacity": self.queue.capacity,
                "mean_service_s": self.queue.load.mean_service_s,
                "service_var_s2": self.queue.load.service_var_s2,
                "arrival_rate": self.queue.load.arrival_rate,
                "admitted_rate": self.queue.load.admitted_rate,
                "served": self.queue.served,
                "failed": self.queue.failed,
            },
            "prompts": dict(sorted(self.outcomes.items())),
            "http": list(self.http_urls),
            "plugins": {
                "backend": self.config.backend,
                "model": self.backend.model_name,
                "gossip": self.config.gossip,
                "admission": self.config.admission,
            },
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, bootstrap and keep presence flowing until cancelled."""
        presence_in = await self.overlay.subscribe(PRESENCE_TOPIC, self._validate)
        async with trio.open_nursery() as nursery:
            self._dialer = PeerDialer(
                self.overlay,
                nursery,
                self.config.presence_interval_s,
                self.config.max_dialed_peers,
            )
            await nursery.start(self.queue.run)
            await nursery.start(self.engine.run)
            await self.gossip.start(self.overlay, self._admit, self._deliver, nursery)
            nursery.start_soon(self._receive_presence, presence_in)
            for addr in self.config.bootstrap:
                nursery.start_soon(self._dialer.keep_connected, addr)
            nursery.start_soon(self._publish_presence)
            nursery.start_soon(self._expire_peers)
            task_status.started()

    async def ask(self, request: QueryRequest, on_text: TextCallback | None = None) -> Answer:
        """Answer a user's prompt with a distributed Mixture-of-Agents over the peer view.

        Admission control decides first: the prompt runs as asked, runs with a smaller (M, k)
        (said in the trace), or is refused with AdmissionRefused. Every prompt is counted in
        `outcomes` once as admitted or refused, and once more as answered, failed or cancelled.
        `on_text` gets the answer's text as the final aggregation produces it.
        """
        return await self.answer(self.admit(request), on_text)

    def admit(self, request: QueryRequest) -> Decision:
        """`ask`'s admission step alone, for callers that must know before they start answering
        (a streamed HTTP response cannot become a refusal once begun); then call `answer`.

        Every prompt counts toward the users' arrival rate, refused or not: admission needs
        the load users offer, not the share it let through.
        """
        self.queue.load.observe_arrival()
        context = AdmissionContext(
            request, self.operating_point(), self.queue.length, self.queue.capacity
        )
        decision = self.admission.decide(context)
        if decision.action == "refuse":
            self.outcomes["refused"] += 1
            raise AdmissionRefused(decision.reason, decision.retry_after_s)
        self.queue.load.observe_admitted()
        self.outcomes["degraded" if decision.action == "degrade" else "accepted"] += 1
        return decision

    async def answer(self, decision: Decision, on_text: TextCallback | None = None) -> Answer:
        """Run an admitted prompt (see `admit`); counted as answered, failed or cancelled (the
        asker gave up, e.g. an HTTP client that left, or the node is stopping)."""
        notes = (decision.reason,) if decision.reason else ()
        try:
            answer = await self.engine.ask(decision.request, notes, on_text)
        except BaseException as exc:
            self.outcomes["cancelled" if _only_cancelled(exc) else "failed"] += 1
            raise
        self.outcomes["answered"] += 1
        for listener in self.answer_listeners:
            listener(answer)
        return answer

    def own_load(self) -> PeerLoad:
        load = self.queue.load
        return PeerLoad(
            self.peer_id,
            load.mean_service_s,
            self.queue.length,
            self.queue.capacity,
            load.arrival_rate,
            load.service_var_s2,
            load.service_samples,
            load.admitted_rate,
        )

    def operating_point(self) -> OperatingPoint:
        """This node and its live peers: service times, rates and queues, as last heard."""
        return OperatingPoint(
            (self.own_load(), *self._peer_loads()), self.queue.load.mean_service_s
        )

    def _peer_loads(self) -> list[PeerLoad]:
        return [_load_of(rec.presence) for rec in self.peer_view.live(trio.current_time())]

    async def _send_moa(self, peer_id: str, message: Message) -> None:
        data = seal(message, self.identity, now=self.wall_clock())
        await self.gossip.send(self.overlay, peer_id, data)

    def _admit(self, data: bytes, publisher: str | None = None) -> Envelope | None:
        try:
            return self.gate.admit(data, publisher)
        except WireError as exc:
            log.debug("rejected a message: %s", exc)
            return None

    async def _deliver(self, envelope: Envelope) -> None:
        await self.engine.receive(envelope.author, envelope.body)

    def _validate(self, publisher: str, data: bytes) -> bool:
        # the overlay runs GossipSub with strict signing: `publisher` signed these bytes
        return self._admit(data, publisher) is not None

    async def _receive_presence(self, messages: trio.abc.ReceiveChannel[Any]) -> None:
        async for message in messages:
            try:
                envelope = decode_envelope(message.data)  # already admitted by _validate
            except WireError:
                continue
            if not isinstance(envelope.body, Presence):
                continue
            if self.peer_view.observe(envelope.body, trio.current_time()):
                log.info("peer %s joined", envelope.body.peer_id)
                self.events["peer_joined"] += 1
                if self._dialer is not None:
                    self._dialer.dial_if_useful(envelope.body)

    async def _publish_presence(self) -> None:
        while True:
            data = seal(self.presence(), self.identity, now=self.wall_clock())
            try:
                await self.overlay.publish(PRESENCE_TOPIC, data)
                self.events["presence_published"] += 1
            except OverlayError as exc:
                log.warning("could not publish presence: %s", exc)
            await trio.sleep(self.config.presence_interval_s)

    async def _expire_peers(self) -> None:
        while True:
            await trio.sleep(self.config.presence_interval_s / 2)
            for peer_id in self.peer_view.expire(trio.current_time()):
                log.info(
                    "peer %s left (no presence for %.1f periods)",
                    peer_id,
                    self.config.missed_presence_limit,
                )
                self.events["peer_expired"] += 1


@contextlib.asynccontextmanager
async def open_node(
    config: NodeConfig,
    *,
    identity: NodeIdentity | None = None,
    overlay_opener: OverlayOpener | None = None,
    backend: Backend | None = None,
    control: bool = True,
    wall_clock: Callable[[], float] = time.time,
    http_socket: socket.socket | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Node]:
    """Start a node, yield it once it is listening and subscribed, stop it on exit.

    With `config.http` it also serves its HTTP API (`dmoa_p2p.http`), on `http_socket` if
    the caller bound it already. `rng` draws the node's proposers (seed it for repeatable
    runs).
    """
    from dmoa_p2p.http import bind_http_socket, serve_http  # the HTTP layer sits above
    from dmoa_p2p.node._control import serve_control

    for addr in config.bootstrap:
        peer_id_of_multiaddr(addr)  # fail fast on a bad bootstrap address
    if config.http is not None and http_socket is None:
        http_socket = bind_http_socket(config.http)  # fail fast on a taken port
    # hypercorn takes the socket over once serving; closed here if it never got that far
    with contextlib.closing(http_socket) if http_socket else contextlib.nullcontext():
        identity = identity or load_or_create_identity(config.data_dir)
        opener = overlay_opener or open_libp2p_overlay
        backend = backend or load_plugin("backend", config.backend)(config.backend_options)
        try:
            async with opener(identity, config.listen_addrs) as overlay:
                node = Node(config, identity, overlay, backend, wall_clock, rng)
                async with trio.open_nursery() as nursery:
                    await nursery.start(node.run)
                    if control:
                        await nursery.start(serve_control, node, config.control_path)
                    if http_socket is not None:
                        await nursery.start(serve_http, node, http_socket, config.http_api_key)
                    try:
                        yield node
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await backend.aclose()


async def serve_node(
    config: NodeConfig,
    http_socket: socket.socket | None = None,
    *,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until cancelled (trio service style); `http_socket` as in `open_node`."""
    async with open_node(config, http_socket=http_socket) as node:
        task_status.started(node)
        await trio.sleep_forever()
