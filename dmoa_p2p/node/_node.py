"""A dmoa-p2p node: identity, overlay, queue, MoA engine and presence, run as one trio service."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from dmoa_p2p.admission import OperatingPoint
from dmoa_p2p.backends import Backend, TextCallback
from dmoa_p2p.config import NodeConfig
from dmoa_p2p.gossip import ClockSkew, GossipPolicy
from dmoa_p2p.identity import NodeIdentity, load_or_create_identity
from dmoa_p2p.moa import Answer, MoaEngine, PeerLoad, ProgressCallback, QueryRequest
from dmoa_p2p.node._clock import CLOCK_TOLERANCE_S, ClockWatch
from dmoa_p2p.node._dialer import DialBudget, PeerDialer
from dmoa_p2p.node._known_peers import KNOWN_PEERS_FILE, KnownPeers
from dmoa_p2p.node._lock import data_dir_lock
from dmoa_p2p.node._peer_view import PeerView
from dmoa_p2p.node._presence import BLOCK_S, PRESENCE_TOPIC, PresencePace, PresenceService
from dmoa_p2p.node._prompts import AdmittedPrompt, PromptDesk, load_admission
from dmoa_p2p.node._providing import ModelAnnouncer, model_providers
from dmoa_p2p.node._snapshot import NodeSnapshot, PeerEntry, load_of
from dmoa_p2p.node._watch import PeerKeeper, load_backend_announced
from dmoa_p2p.overlay import MDNS_SERVICE, Overlay, check_peer_address, open_libp2p_overlay
from dmoa_p2p.queue import InferenceQueue
from dmoa_p2p.registry import create_plugin
from dmoa_p2p.wire import (
    MOA_KINDS,
    PRESENCE_KINDS,
    Envelope,
    Message,
    MessageGate,
    Precheck,
    RejectReason,
    Task,
    WireError,
    seal,
)

log = logging.getLogger(__name__)

OverlayOpener = Callable[[NodeIdentity, Sequence[str]], AbstractAsyncContextManager[Overlay]]


class Node:
    """One participant of the overlay. Build it with `open_node`.

    It knows nothing of the front ends that serve its users (the control socket and the HTTP
    API, composed beside it by `dmoa_p2p.app`): they call `ask`, or `admit` then `answer`,
    and read `snapshot`.
    """

    def __init__(
        self,
        config: NodeConfig,
        identity: NodeIdentity,
        overlay: Overlay,
        backend: Backend,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        *,
        known_peers: KnownPeers,
    ) -> None:
        self.config = config
        self.identity = identity
        self.overlay = overlay
        self.backend = backend
        self.wall_clock = wall_clock
        self.gate = MessageGate(
            clock=wall_clock, freshness_s=CLOCK_TOLERANCE_S, max_future_s=CLOCK_TOLERANCE_S
        )
        self.peer_view = PeerView(identity.peer_id, config.missed_presence_limit)
        self.dial_budget = DialBudget(trio.current_time)
        self.queue = InferenceQueue(backend, config.queue_capacity)
        self.gossip: GossipPolicy = create_plugin("gossip", config.gossip, config.gossip_options)
        self.events: Counter[str] = Counter()
        self._clock_watch = ClockWatch(self.events)
        self._presence_pace = PresencePace()
        self.announcer = ModelAnnouncer(overlay, backend.model_name)
        self.blocked_until: dict[str, float] = {}  # presence flooders, until when
        self.known_peers = known_peers
        self.peer_keeper = PeerKeeper(
            overlay, self.peer_view, self.known_peers, config.presence_interval_s, wall_clock
        )
        self.engine = MoaEngine(
            identity.peer_id,
            self.queue,
            self._send_moa,
            self._peer_loads,
            lambda peer_id: self.gossip.can_reach(self.overlay, peer_id),
            rng,
            self._plugin_options,
        )
        admission = load_admission(config.admission, config.admission_options)
        self.prompts = PromptDesk(self.engine, self.queue, admission, self.operating_point)
        self._presence = PresenceService(
            overlay,
            identity,
            self.peer_view,
            lambda: self.snapshot().presence(),
            wall_clock,
            config.presence_interval_s,
            self.events,
        )

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        return self.overlay.listen_addrs

    @property
    def outcomes(self) -> Counter[str]:
        """User prompts by outcome (see `PromptDesk`)."""
        return self.prompts.outcomes

    def live_peer_ids(self) -> frozenset[str]:
        return self.peer_view.live_ids(trio.current_time())

    def operating_point(self) -> OperatingPoint:
        """This node and its live peers, as admission control sees them."""
        return self.snapshot().operating_point

    def snapshot(self) -> NodeSnapshot:
        """The node's state now: the one record every reader of it uses."""
        now = trio.current_time()
        config, load = self.config, self.queue.load
        rho_max = getattr(self.prompts.policy, "rho_max", None)
        return NodeSnapshot(
            peer_id=self.peer_id,
            listen_addrs=self.listen_addrs,
            reachability=self.overlay.reachability,
            model=self.backend.model_name,
            own=PeerLoad(
                self.peer_id,
                load.mean_service_s,
                self.queue.length,
                self.queue.capacity,
                load.arrival_rate,
                load.service_var_s2,
                load.service_samples,
                load.admitted_rate,
            ),
            peers=tuple(
                PeerEntry(
                    load_of(rec.presence),
                    rec.presence.listen_addrs,
                    rec.presence.models,
                    now - rec.last_seen,
                    self.overlay.link(rec.presence.peer_id),
                )
                for rec in self.peer_view.live(now)
            ),
            pending_peers=len(self.peer_view.pending(now)),
            connected_peers=tuple(sorted(self.overlay.connected_peers())),
            served=self.queue.served,
            failed=self.queue.failed,
            messages_accepted=self.gate.accepted,
            messages_rejected={str(r): n for r, n in sorted(self.gate.rejections.items())},
            refusals=self._refusals(),
            events=dict(sorted(self.events.items())),
            prompts=dict(sorted(self.outcomes.items())),
            plugins={
                "backend": config.backend,
                "model": self.backend.model_name,
                "gossip": config.gossip,
                "admission": config.admission,
            },
            admission_options=dict(config.admission_options),
            rho_max=float(rho_max) if isinstance(rho_max, float | int) else None,
            presence_interval_s=config.presence_interval_s,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, bootstrap and keep presence flowing until cancelled."""
        presence_in = await self.overlay.subscribe(PRESENCE_TOPIC, self._validate)
        async with trio.open_nursery() as nursery:
            dialer = PeerDialer(
                self.overlay,
                nursery,
                self.config.presence_interval_s,
                self.config.max_dialed_peers,
                self.dial_budget,
            )
            await nursery.start(self.queue.run)
            await nursery.start(self.engine.run)
            await self.gossip.start(self.overlay, self._admit_moa, self._deliver, nursery)
            await nursery.start(self._presence.run, presence_in, dialer)
            for addr in self.config.bootstrap:
                nursery.start_soon(dialer.keep_connected, addr)
            nursery.start_soon(self.peer_keeper.run, dialer, bool(self.config.bootstrap))
            nursery.start_soon(self._lift_blocks)
            nursery.start_soon(self.announcer.run)
            task_status.started()

    async def ask(
        self,
        request: QueryRequest,
        on_text: TextCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Answer:
        """Answer a user's prompt with a distributed Mixture-of-Agents over the peer view.

        Admission control decides first: the prompt runs as asked, runs with a smaller (M, k)
        (said in the trace), or is refused with PromptRefused. `on_text` gets the answer's
        text as the final aggregation produces it; `on_progress` the query's progress.
        """
        return await self.answer(self.admit(request), on_text, on_progress)

    async def providers(self, model: str, limit: int) -> list[dict[str, Any]]:
        """Other peers serving `model`, as JSON (see `model_providers`)."""
        live = self.peer_view.live(trio.current_time())
        return await model_providers(self.overlay, model, limit, live)

    def admit(self, request: QueryRequest) -> AdmittedPrompt:
        """`ask`'s admission step alone, for callers that must know before they start answering
        (a streamed HTTP response cannot become a refusal once begun); then call `answer`."""
        return self.prompts.admit(request)

    async def answer(
        self,
        admitted: AdmittedPrompt,
        on_text: TextCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Answer:
        """Run an admitted prompt (see `admit`)."""
        return await self.prompts.answer(admitted, on_text, on_progress)

    def _block(self, peer_id: str) -> None:
        """Stop listening to a presence flooder's pubsub messages for BLOCK_S."""
        if peer_id == self.peer_id:
            return
        self.overlay.block(peer_id)
        self.blocked_until[peer_id] = trio.current_time() + BLOCK_S
        self.events["flooder_blocked"] += 1
        log.warning(
            "peer %s sends presences far faster than its own interval: ignoring its pubsub "
            "messages for %.0f s",
            peer_id,
            BLOCK_S,
        )

    async def _lift_blocks(self) -> None:
        """Lift the blocks whose time is up."""
        while True:
            await trio.sleep(BLOCK_S / 10)
            now = trio.current_time()
            for peer_id, until in list(self.blocked_until.items()):
                if until <= now:
                    del self.blocked_until[peer_id]
                    self.overlay.unblock(peer_id)

    def _refusals(self) -> dict[str, int]:
        """Everything refused that is not a rejected message, by what refused it."""
        overlay = self.overlay
        counts = {
            "direct_too_large": sum(overlay.refused.values()),
            "direct_rejected": sum(overlay.rejected.values()),
            "subscriber_full": sum(overlay.dropped.values()),
            "presence_too_frequent": self._presence_pace.dropped,
            "presence_flooders_blocked": len(self.blocked_until),
            **{f"presence_{k}": n for k, n in self.peer_view.refused.items()},
            **{f"dial_{k}": n for k, n in self.dial_budget.refused.items()},
            **{f"task_{k}": n for k, n in self.engine.task_refusals.items()},
        }
        return dict(sorted(counts.items()))

    def _plugin_options(self, kind: str, name: str) -> dict[str, str]:
        config = self.config
        by_name = config.strategy_options if kind == "strategy" else config.aggregator_options
        return by_name.get(name, {})

    def _peer_loads(self) -> list[PeerLoad]:
        """The proposer candidates: verified live peers the gossip policy can reach now."""
        return [
            load_of(rec.presence)
            for rec in self.peer_view.live(trio.current_time())
            if self.gossip.can_reach(self.overlay, rec.peer_id)
        ]

    async def _send_moa(self, peer_id: str, message: Message) -> None:
        data = seal(message, self.identity, now=self.wall_clock())
        try:
            await self.gossip.send(self.overlay, peer_id, data)
        except ClockSkew as exc:
            self._clock_watch.refused_by(exc)
            raise

    def _admit_moa(self, data: bytes, publisher: str | None = None) -> Envelope:
        return self._admit(data, publisher, MOA_KINDS, self._within_fair_rate)

    def _within_fair_rate(self, envelope: Envelope) -> None:
        task = envelope.body
        if isinstance(task, Task) and (refusal := self.engine.over_fair_rate(task)) is not None:
            raise WireError(RejectReason.OVER_FAIR_RATE, refusal.reason)

    def _admit(
        self,
        data: bytes,
        publisher: str | None,
        kinds: tuple[type[Message], ...],
        precheck: Precheck | None = None,
    ) -> Envelope:
        try:
            return self.gate.admit(data, publisher, kinds, precheck)
        except WireError as exc:
            log.debug("rejected a message: %s", exc)
            raise

    async def _deliver(self, envelope: Envelope) -> None:
        await self.engine.receive(envelope.author, envelope.body)

    def _validate(self, publisher: str, data: bytes) -> bool:
        # the overlay runs GossipSub with strict signing: `publisher` signed these bytes
        if self._presence_pace.too_soon(data, publisher):
            for flooder in self._presence_pace.flooders():
                self._block(flooder)
            return False
        try:
            envelope = self._admit(data, publisher, PRESENCE_KINDS)
        except WireError as exc:
            if exc.reason in (RejectReason.STALE, RejectReason.FUTURE):
                self._clock_watch.presence_off(publisher, exc)
            return False
        self._presence_pace.accepted(envelope.author)
        return True


@contextlib.asynccontextmanager
async def open_node(
    config: NodeConfig,
    *,
    identity: NodeIdentity | None = None,
    overlay_opener: OverlayOpener | None = None,
    backend: Backend | None = None,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> AsyncIterator[Node]:
    """Start a node, yield it once it is listening and subscribed, stop it on exit.

    `rng` draws the node's proposers (seed it for repeatable runs). The backend is built
    from the configuration unless given, and closed on exit either way.
    """
    for addr in config.bootstrap:
        check_peer_address(addr)  # BadAddress now, rather than a dial that fails forever
    with data_dir_lock(config.data_dir):
        identity = identity or load_or_create_identity(config.data_dir)
        opener = overlay_opener or functools.partial(
            open_libp2p_overlay,
            relay_service=config.relay_service,
            reachability=config.reachability,
            bootstrap=config.bootstrap,
            mdns=MDNS_SERVICE if config.mdns else None,
        )
        backend = backend or load_backend_announced(config.backend, config.backend_options)
        try:
            async with opener(identity, config.listen_addrs) as overlay:
                known = KnownPeers.load(config.data_dir / KNOWN_PEERS_FILE, identity.peer_id)
                node = Node(config, identity, overlay, backend, wall_clock, rng, known_peers=known)
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(node.run)
                        try:
                            yield node
                        finally:
                            nursery.cancel_scope.cancel()
                finally:
                    # shielded so that a cancelled node still writes what it learnt; the write
                    # (a local file and an fsync) is not bounded, as abandoning its thread could
                    # leave the file unsaved
                    with trio.CancelScope(shield=True):
                        await node.known_peers.save(force=True)
        finally:
            with trio.CancelScope(shield=True):
                await backend.aclose()
