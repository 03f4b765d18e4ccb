"""A dmoa-p2p node: identity, overlay, queue, MoA engine and peer sampling, as one trio service."""

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
from dmoa_p2p.gossip import ClockSkew, GossipPolicy, PeerUnreachable
from dmoa_p2p.identity import NodeIdentity, load_or_create_identity
from dmoa_p2p.moa import Answer, MoaEngine, PeerLoad, ProgressCallback, QueryRequest
from dmoa_p2p.node._clock import CLOCK_TOLERANCE_S, ClockWatch
from dmoa_p2p.node._dialer import AddressBook, DialBudget, PeerDialer
from dmoa_p2p.node._known_peers import KNOWN_PEERS_FILE, KnownPeers
from dmoa_p2p.node._lock import data_dir_lock
from dmoa_p2p.node._neighbours import Neighbours
from dmoa_p2p.node._prompts import AdmittedPrompt, PromptDesk, load_admission
from dmoa_p2p.node._providing import ModelAnnouncer, model_providers
from dmoa_p2p.node._sampled_records import SignedPresence
from dmoa_p2p.node._sampler import PeerSampler
from dmoa_p2p.node._sampling import SamplingConfig
from dmoa_p2p.node._sampling_service import SamplingService
from dmoa_p2p.node._snapshot import NodeSnapshot, PeerEntry, load_of, presence_of
from dmoa_p2p.node._watch import PeerKeeper, load_backend_announced
from dmoa_p2p.node._work import OutstandingWork
from dmoa_p2p.overlay import MDNS_SERVICE, Overlay, check_peer_address, open_libp2p_overlay
from dmoa_p2p.queue import InferenceQueue
from dmoa_p2p.registry import create_plugin
from dmoa_p2p.wire import (
    MOA_KINDS,
    Envelope,
    Message,
    MessageGate,
    Precheck,
    Presence,
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
        self.dial_budget = DialBudget(trio.current_time)
        self.queue = InferenceQueue(backend, config.queue_capacity)
        self.gossip: GossipPolicy = create_plugin("gossip", config.gossip, config.gossip_options)
        self.events: Counter[str] = Counter()
        self._clock_watch = ClockWatch(self.events)
        self.announcer = ModelAnnouncer(overlay, backend.model_name)
        self.known_peers = known_peers
        sampling = SamplingConfig(capacity=config.view_size)
        # its own generator, so that shuffles do not shift a seeded node's proposer draws
        own_rng = random.Random(rng.getrandbits(64)) if rng is not None else random.Random()
        self.work = OutstandingWork(trio.current_time)  # its connections are not closed
        self._candidates = AddressBook()  # where the proposers offered lately listen
        self.neighbours = Neighbours(
            overlay, own_rng, sampling.round_s, self.work, target=config.neighbours
        )
        self.sampling = SamplingService(
            overlay,
            PeerSampler(identity, sampling),
            self.neighbours,
            self.presence,
            wall_clock,
            own_rng,
            self.events,
        )
        self.peer_keeper = PeerKeeper(
            overlay,
            self.records,
            self.known_peers,
            config.presence_interval_s,
            wall_clock,
            self.events,
        )
        self.engine = MoaEngine(
            identity.peer_id,
            self.queue,
            self._send_moa,
            self._peer_loads,
            lambda peer_id: self.gossip.can_reach(self.overlay, peer_id),
            rng,
            self._plugin_options,
            fair_share=config.fair_share,
        )
        admission = load_admission(config.admission, config.admission_options)
        self.prompts = PromptDesk(self.engine, self.queue, admission, self.operating_point)

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

    def records(self) -> list[SignedPresence]:
        """The live peers this node knows, by their signed records: its proposer candidates."""
        return self.sampling.records()

    def live_peer_ids(self) -> frozenset[str]:
        return frozenset(record.peer_id for record in self.records())

    def operating_point(self) -> OperatingPoint:
        """This node and its live peers, as admission control sees them."""
        return self.snapshot().operating_point

    def snapshot(self) -> NodeSnapshot:
        """The node's state now: the one record every reader of it uses."""
        now = self.wall_clock()
        config = self.config
        rho_max = getattr(self.prompts.policy, "rho_max", None)
        return NodeSnapshot(
            peer_id=self.peer_id,
            listen_addrs=self.listen_addrs,
            reachability=self.overlay.reachability,
            model=self.backend.model_name,
            own=self._own_load(),
            peers=tuple(
                PeerEntry(
                    load_of(rec.presence),
                    rec.presence.listen_addrs,
                    rec.presence.models,
                    max(0.0, now - rec.issued_at),
                    self.overlay.link(rec.peer_id),
                )
                for rec in sorted(self.records(), key=lambda rec: rec.peer_id)
            ),
            pending_peers=0,
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
            presence_interval_s=self.sampling.sampler.config.round_s,
            sampling=self.sampling.to_json(),
        )

    def _own_load(self) -> PeerLoad:
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

    def presence(self) -> Presence:
        """What this node's record says now (as `snapshot().presence()`, without the peers)."""
        model, round_s = self.backend.model_name, self.sampling.sampler.config.round_s
        return presence_of(self.peer_id, self.listen_addrs, model, self._own_load(), round_s)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bootstrap and keep shuffling until cancelled."""
        async with trio.open_nursery() as nursery:
            self.dialer = PeerDialer(
                self.overlay,
                nursery,
                self.config.presence_interval_s,
                self.config.max_dialed_peers,
                self.dial_budget,
                enough=self.neighbours.target,
            )
            await nursery.start(self.queue.run)
            await nursery.start(self.engine.run)
            await self.gossip.start(self.overlay, self._admit_moa, self._deliver, nursery)
            await nursery.start(self.sampling.run, self.dialer)
            for addr in self.config.bootstrap:
                nursery.start_soon(self.dialer.keep_connected, addr)
            nursery.start_soon(self.peer_keeper.run, self.dialer, bool(self.config.bootstrap))
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
        return await model_providers(self.overlay, model, limit, self.records())

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

    def _refusals(self) -> dict[str, int]:
        """Everything refused that is not a rejected message, by what refused it."""
        overlay = self.overlay
        counts = {
            "direct_too_large": sum(overlay.refused.values()),
            "direct_rejected": sum(overlay.rejected.values()),
            "subscriber_full": sum(overlay.dropped.values()),
            **{f"shuffle_{k}": n for k, n in self.sampling.refused.items()},
            **{f"record_{k}": n for k, n in self.sampling.sampler.verifier.refused.items()},
            "connections_closed": self.neighbours.closed,
            **{f"dial_{k}": n for k, n in self.dial_budget.refused.items()},
            **{f"task_{k}": n for k, n in self.engine.task_refusals.items()},
        }
        return dict(sorted(counts.items()))

    def _plugin_options(self, kind: str, name: str) -> dict[str, str]:
        config = self.config
        by_name = config.strategy_options if kind == "strategy" else config.aggregator_options
        return by_name.get(name, {})

    def _peer_loads(self) -> list[PeerLoad]:
        """The proposer candidates: the live peers of the sampled view (any of them can be
        dialled: a task to an unconnected one dials it first, see `_send_moa`)."""
        records = self.records()
        for rec in records:
            self._candidates.note(rec.peer_id, rec.presence.listen_addrs)
        return [load_of(rec.presence) for rec in records]

    async def _send_moa(self, peer_id: str, message: Message) -> None:
        self.work.passed(peer_id, message)
        if peer_id not in self.overlay.connected_peers():
            await self._reach(peer_id)
        data = seal(message, self.identity, now=self.wall_clock())
        try:
            await self.gossip.send(self.overlay, peer_id, data)
        except PeerUnreachable as exc:
            self.work.unsent(peer_id, message)
            if isinstance(exc, ClockSkew):
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

    async def _reach(self, peer_id: str) -> None:
        """Dial a drawn proposer this node has no connection to, at its record's addresses
        (within the dial budget); the send that follows says if it failed."""
        await self.dialer.dial_now(peer_id, self._candidates.get(peer_id))

    async def _deliver(self, envelope: Envelope) -> None:
        body = envelope.body
        if not isinstance(body, Presence) and body.recipient == self.peer_id:  # else ignored
            self.work.passed(envelope.author, body)
        await self.engine.receive(envelope.author, body)


@contextlib.asynccontextmanager
async def open_node(
    config: NodeConfig,
    *,
    identity: NodeIdentity | None = None,
    overlay_opener: OverlayOpener | None = None,
    backend: Backend | None = None,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    writes_in_thread: bool = True,
) -> AsyncIterator[Node]:
    """Start a node, yield it once it is listening and subscribed, stop it on exit.

    `rng` draws the node's proposers (seed it for repeatable runs). The backend is built
    from the configuration unless given, and closed on exit either way. Without
    `writes_in_thread` the node writes its files in the trio thread, as virtual-time
    swarms must: a mock clock jumps ahead while a worker thread works.
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
                known = KnownPeers.load(
                    config.data_dir / KNOWN_PEERS_FILE,
                    identity.peer_id,
                    writes_in_thread=writes_in_thread,
                )
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
