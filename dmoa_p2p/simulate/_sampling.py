"""A virtual swarm of peer-sampling views in rounds, with churn: how uniform proposer choice is.

Plain loops over rounds (no trio, no network): every node runs the node package's pure
`PartialView` shuffles; records are built directly (their signatures are checked in the node
package's own tests), so a thousand nodes take seconds.
"""

from __future__ import annotations

import collections
import math
import random
import statistics
from collections.abc import Sequence

import attrs

from dmoa_p2p.node import (
    PartialView,
    SampleStream,
    SamplingConfig,
    SignedPresence,
    eligible_proposers,
)
from dmoa_p2p.wire import Presence


@attrs.frozen
class SamplingSwarm:
    """n nodes shuffling every `config.round_s`; `churn_per_min` of them crash (and as many
    join) per minute; each live origin draws `proposers` peers once per round."""

    nodes: int
    rounds: int
    warmup_rounds: int
    config: SamplingConfig = attrs.field(factory=SamplingConfig)
    proposers: int = 3
    churn_per_min: float = 0.01
    bootstrap_peers: int = 5  # records a starting node knows
    # 0: draw from the view alone; else also from a `SampleStream` of this many peers
    stream_capacity: int = 0
    # a joiner not drawn this long after joining counts as never drawn; later joiners are
    # left out of `joiners_never_drawn` (the run ended before they had the time)
    join_horizon_s: float = 10.0
    seed: int = 1
    # 0: Cyclon, each shuffle's partner is the view's oldest entry (a new dial a round). Else
    # each node keeps this many long-lived symmetric links (at most `max_neighbours`),
    # shuffles only along them and opens one a round while below: HyParView's split
    neighbours: int = attrs.field(default=6, validator=attrs.validators.ge(0))
    max_neighbours: int = attrs.field(default=8)

    @max_neighbours.validator
    def _check_max(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value < self.neighbours:
            raise ValueError(f"max_neighbours must be at least {self.neighbours}, not {value}")


@attrs.frozen
class SamplingResult:
    """What a run measured after warm-up (times in virtual seconds)."""

    tv_round_mean: float  # exact TV from uniform over live nodes, each round, averaged
    tv_round_max: float
    tv_window: float  # exact TV of the choice summed over the whole window
    tv_draws: float  # TV of the actual draws over the window (includes sampling noise)
    tv_noise_floor: float  # what a perfectly uniform chooser would show for as many draws
    busiest_share: float  # the most drawn node's window share times n (1 = uniform)
    join_delays_s: tuple[float, ...]  # join to first drawn, per joiner drawn in the window
    joiners_never_drawn: int  # joined `join_horizon_s` before the end, still never drawn
    crash_delays_s: tuple[float, ...]  # crash to last drawn (0: never drawn after)
    crash_view_delays_s: tuple[float, ...]  # crash to the last live view entry naming it
    in_degree: tuple[int, ...]  # views holding each live node, at the end
    # per node live through the whole window: mean views holding it, and its share of the
    # choice times n (1 = uniform), both over the window
    mean_in_degree: tuple[float, ...]
    shares: tuple[float, ...]
    view_fill: float  # mean live entries per view, over the window
    short_draws: int  # draws that found fewer than k eligible peers
    max_answers: int  # most shuffle requests any node answered in one round
    # per node live through the window, per second: shuffle messages sent plus received
    # (mean and most), and records they carried (mean)
    messages_per_node_s: float
    max_messages_per_node_s: float
    records_per_node_s: float
    refused_answers: int  # requests over a responder's budget
    draws: int
    # connections opened (or tried) per node per second: Cyclon opens one per shuffle, the
    # neighbour mode one per link made or refused
    dials_per_node_s: float
    neighbour_degree: tuple[int, int, float]  # links of the live nodes at the end: min, max, mean


def _presence(peer_id: str) -> Presence:
    return Presence(peer_id, (), ("fake",), None, None, 0, 0, 64, None, None, 1.0)


@attrs.define
class _Node:
    presence: Presence
    view: PartialView
    rng: random.Random
    stream: SampleStream | None
    alive: bool = True
    # neighbour mode: each link's peer, and when this node last shuffled with it
    links: dict[str, float] = attrs.Factory(dict)

    def record(self, now: float) -> SignedPresence:
        return SignedPresence(self.presence, now, b"")


class _Run:
    """The state of one simulated swarm."""

    def __init__(self, swarm: SamplingSwarm) -> None:
        self.swarm = swarm
        self.rng = random.Random(f"dmoa-sampling/{swarm.seed}")
        self.nodes: dict[str, _Node] = {}
        self.live: list[str] = []
        self.next_id = 0
        self.answers: dict[str, int] = {}
        self.refused = 0
        # shuffle messages and records each node sent plus received: its control traffic
        self.messages: collections.Counter[str] = collections.Counter()
        self.records: collections.Counter[str] = collections.Counter()
        self.dials: collections.Counter[str] = collections.Counter()

    def carry(self, sender: str, receiver: str, records: int) -> None:
        self.messages[sender] += 1
        self.messages[receiver] += 1
        self.records[sender] += records
        self.records[receiver] += records

    def new_node(self) -> _Node:
        peer_id = f"peer{self.next_id:06d}"
        self.next_id += 1
        rng = random.Random(f"dmoa-sampling/{self.swarm.seed}/{peer_id}")
        config = self.swarm.config
        stream = None
        if self.swarm.stream_capacity:
            stream = SampleStream(self.swarm.stream_capacity, config.ttl_s)
        node = _Node(_presence(peer_id), PartialView(peer_id, config), rng, stream)
        self.nodes[peer_id] = node
        self.live.append(peer_id)
        return node

    def start(self) -> None:
        for _ in range(self.swarm.nodes):
            self.new_node()
        for peer_id in self.live:
            node = self.nodes[peer_id]
            known = self.rng.sample(self.live, self.swarm.bootstrap_peers + 1)
            records = [self.nodes[p].record(0.0) for p in known if p != peer_id]
            node.view = node.view.add(records, 0.0)
        if self.swarm.neighbours:
            self.first_links()

    def first_links(self) -> None:
        """Each node in turn links to random others until it has its target."""
        for peer_id in self.live:
            for _ in range(4 * self.swarm.max_neighbours):  # until linked enough, or given up
                if len(self.nodes[peer_id].links) >= self.swarm.neighbours:
                    break
                self.link(peer_id, self.rng.choice(self.live))

    def link(self, a: str, b: str) -> bool:
        """Link a and b if b is live, not linked yet, and both have room."""
        x, y, most = self.nodes[a], self.nodes[b], self.swarm.max_neighbours
        if a == b or b in x.links or not y.alive or max(len(x.links), len(y.links)) >= most:
            return False
        x.links[b] = y.links[a] = -math.inf  # never shuffled with: first in line
        return True

    def dial(self, peer_id: str, now: float) -> None:
        """Below its target a node dials one live peer of its view it has no link with."""
        node = self.nodes[peer_id]
        if len(node.links) >= self.swarm.neighbours:
            return
        known = [e.peer_id for e in node.view.live(now) if e.peer_id not in node.links]
        if known:
            self.dials[peer_id] += 1
            self.link(peer_id, node.rng.choice(known))  # refused when dead or full

    def shuffle(self, peer_id: str, now: float) -> None:
        node = self.nodes[peer_id]
        chosen = None
        if self.swarm.neighbours:
            if not node.links:
                return  # no neighbour left: it dials first
            chosen = min(node.links, key=lambda p: (node.links[p], p))  # longest unshuffled
            node.links[chosen] = now
        node.view, pending = node.view.start_shuffle(node.record(now), now, node.rng, chosen)
        if pending is None:
            return
        if not self.swarm.neighbours:
            self.dials[peer_id] += 1  # Cyclon keeps no connection: each partner is a dial
        partner = self.nodes[pending.partner_id]
        if not partner.alive:
            self.messages[peer_id] += 1  # sent, or a dial that failed
            return  # no answer: the partner's slot is gone already
        self.carry(peer_id, partner.presence.peer_id, len(pending.offer.entries))
        partner.view, reply = partner.view.answer(
            pending.offer, now, partner.rng, partner.record(now)
        )
        if reply is None:
            self.refused += 1
            self.carry(partner.presence.peer_id, peer_id, 0)  # a refusal
            return
        self.carry(partner.presence.peer_id, peer_id, len(reply.entries))
        node.view = node.view.complete(pending, reply, now)
        if node.stream is not None and partner.stream is not None:
            node.stream.feed(reply.entries, peer_id)
            partner.stream.feed(pending.offer.entries, partner.presence.peer_id)

    def crash(self, now: float) -> str:
        victim = self.rng.choice(self.live)
        self.live.remove(victim)
        self.nodes[victim].alive = False
        for peer_id in self.nodes[victim].links:  # its connections close
            del self.nodes[peer_id].links[victim]
        self.nodes[victim].links.clear()
        return victim

    def join(self, now: float) -> str:
        contact = self.rng.choice(self.live)
        most = self.swarm.max_neighbours
        if self.swarm.neighbours and len(self.nodes[contact].links) >= most:
            contact = self.rng.choice([p for p in self.live if len(self.nodes[p].links) < most])
        joiner = self.new_node()
        peer_id = joiner.presence.peer_id
        if self.swarm.neighbours:  # linked to its contact, with an empty view
            self.dials[peer_id] += 1
            self.link(peer_id, contact)
        else:
            joiner.view = joiner.view.add([self.nodes[contact].record(now)], now)
        self.shuffle(peer_id, now)  # its first round, with its contact
        return peer_id

    def round(self, now: float) -> None:
        order = list(self.live)
        self.rng.shuffle(order)
        for peer_id in order:
            if self.swarm.neighbours:
                self.dial(peer_id, now)
            self.shuffle(peer_id, now)
        for peer_id in self.live:
            node = self.nodes[peer_id]
            self.answers[peer_id] = max(self.answers.get(peer_id, 0), node.view.answered)
            node.view = node.view.next_round()


def _tv(mass: dict[str, float], target: dict[str, float]) -> float:
    """Total-variation distance between two (unnormalised, equal-total) mass functions."""
    total = sum(target.values())
    keys = mass.keys() | target.keys()
    return sum(abs(mass.get(x, 0.0) - target.get(x, 0.0)) for x in keys) / (2 * total)


def simulate_sampling(swarm: SamplingSwarm) -> SamplingResult:
    """Run `swarm` for warm-up plus measured rounds and measure proposer choice."""
    run = _Run(swarm)
    run.start()
    window = _Window(swarm.proposers)
    churn_per_round = swarm.churn_per_min * swarm.nodes / 60.0 * swarm.config.round_s
    churn_due = 0.0
    for r in range(swarm.warmup_rounds + swarm.rounds):
        now = r * swarm.config.round_s
        measuring = r >= swarm.warmup_rounds
        if r == swarm.warmup_rounds:
            run.messages.clear()
            run.records.clear()
            run.dials.clear()
        churn_due += churn_per_round
        while churn_due >= 1.0:
            churn_due -= 1.0
            victim, newcomer = run.crash(now), run.join(now)
            if measuring:
                window.crashed[victim] = now
                window.joined[newcomer] = now
        run.round(now)
        if measuring:
            window.observe(run, now)
    return window.result(run, swarm)


@attrs.define
class _Window:
    """What the measured rounds saw: choice distributions, draws, joins and crashes."""

    proposers: int
    joined: dict[str, float] = attrs.Factory(dict)
    crashed: dict[str, float] = attrs.Factory(dict)
    first_drawn: dict[str, float] = attrs.Factory(dict)
    last_drawn: dict[str, float] = attrs.Factory(dict)
    last_in_view: dict[str, float] = attrs.Factory(dict)
    mass: dict[str, float] = attrs.Factory(dict)  # each round's exact choice, summed
    target: dict[str, float] = attrs.Factory(dict)  # uniform over each round's live nodes
    draw_counts: dict[str, float] = attrs.Factory(dict)
    held: dict[str, int] = attrs.Factory(dict)  # views holding each node, summed over rounds
    tvs: list[float] = attrs.Factory(list)
    fills: list[int] = attrs.Factory(list)
    short: int = 0
    draws: int = 0

    def observe(self, run: _Run, now: float) -> None:
        k = self.proposers
        mass: dict[str, float] = {}
        for origin in run.live:
            node = run.nodes[origin]
            eligible = eligible_proposers(node.view, now, stream=node.stream)
            # as a node draws: also among its neighbours, whose own records each shuffle
            # brings (fresh: a link is shuffled every few rounds)
            held = {record.peer_id for record in eligible}
            eligible += [run.nodes[p].record(now) for p in sorted(node.links) if p not in held]
            self.fills.append(len(eligible))
            taken = min(k, len(eligible))
            self.short += taken < k
            for record in eligible:
                pid = record.peer_id
                mass[pid] = mass.get(pid, 0.0) + taken / len(eligible)
                self.held[pid] = self.held.get(pid, 0) + 1
                if pid in self.crashed:
                    self.last_in_view[pid] = now
            for record in node.rng.sample(eligible, taken):  # as choose_proposers draws
                pid = record.peer_id
                self.draws += 1
                self.draw_counts[pid] = self.draw_counts.get(pid, 0.0) + 1.0
                self.first_drawn.setdefault(pid, now)
                self.last_drawn[pid] = now
        total = sum(mass.values())
        self.tvs.append(_tv(mass, {pid: total / len(run.live) for pid in run.live}))
        for pid, m in mass.items():
            self.mass[pid] = self.mass.get(pid, 0.0) + m / total
        for pid in run.live:
            self.target[pid] = self.target.get(pid, 0.0) + 1.0 / len(run.live)

    def result(self, run: _Run, swarm: SamplingSwarm) -> SamplingResult:
        live = set(run.live)
        steady = sorted(live - set(self.joined))
        window_s = swarm.rounds * swarm.config.round_s
        end = (swarm.warmup_rounds + swarm.rounds - 1) * swarm.config.round_s
        in_degree = {pid: 0 for pid in run.live}
        for pid in run.live:
            for entry in run.nodes[pid].view.live(end):
                if entry.peer_id in live:
                    in_degree[entry.peer_id] += 1
        scale = self.draws / max(sum(self.target.values()), 1e-300)
        draws_target = {pid: t * scale for pid, t in self.target.items()}
        joined, crashed = self.joined, self.crashed
        degrees = [len(run.nodes[pid].links) for pid in run.live]
        return SamplingResult(
            tv_round_mean=statistics.fmean(self.tvs),
            tv_round_max=max(self.tvs),
            tv_window=_tv(self.mass, self.target),
            tv_draws=_tv(self.draw_counts, draws_target),
            tv_noise_floor=math.sqrt(len(self.target) / (2 * math.pi * max(self.draws, 1))),
            busiest_share=max(self.mass.values()) / swarm.rounds * len(live),
            join_delays_s=tuple(
                self.first_drawn[p] - t for p, t in joined.items() if p in self.first_drawn
            ),
            joiners_never_drawn=sum(
                p not in self.first_drawn and t <= end - swarm.join_horizon_s
                for p, t in joined.items()
            ),
            crash_delays_s=tuple(
                max(0.0, self.last_drawn.get(p, t) - t) for p, t in crashed.items()
            ),
            crash_view_delays_s=tuple(
                max(0.0, self.last_in_view.get(p, t) - t) for p, t in crashed.items()
            ),
            in_degree=tuple(in_degree[pid] for pid in sorted(in_degree)),
            mean_in_degree=tuple(self.held.get(pid, 0) / swarm.rounds for pid in steady),
            shares=tuple(self.mass.get(pid, 0.0) / swarm.rounds * len(live) for pid in steady),
            view_fill=statistics.fmean(self.fills),
            short_draws=self.short,
            max_answers=max(run.answers.values()),
            messages_per_node_s=statistics.fmean(run.messages[p] for p in steady) / window_s,
            max_messages_per_node_s=max(run.messages[p] for p in steady) / window_s,
            records_per_node_s=statistics.fmean(run.records[p] for p in steady) / window_s,
            refused_answers=run.refused,
            draws=self.draws,
            dials_per_node_s=sum(run.dials.values()) / swarm.nodes / window_s,
            neighbour_degree=(min(degrees), max(degrees), statistics.fmean(degrees)),
        )


def in_degree_summary(in_degree: Sequence[int]) -> tuple[int, int, float, float]:
    """(min, max, mean, standard deviation) of an in-degree distribution."""
    return min(in_degree), max(in_degree), statistics.fmean(in_degree), statistics.pstdev(in_degree)
