"""`bench nat`: two nodes behind two NAT routers, in the NAT lab, reaching each other."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio

from dmoa_p2p.bench._overlay import BenchError, ProgressCallback
from dmoa_p2p.moa import QueryRequest
from dmoa_p2p.simulate import percentile
from dmoa_p2p.testing.labnodes import LabNode, answering, ask, link_to, start_node, wait_status
from dmoa_p2p.testing.netlab import HOME_LANS, LabError, NatKind, open_lab, unavailable_reason

DIRECT_WITHIN_S = 3.0  # goal: punched within this, behind port-preserving drop NATs
TARGET_LATENCY_RATIO = 1.2  # goal: relayed query p50 over direct query p50
START_S = 20.0  # a node process starts in 1-3 s on 2 busy cores
FIRST_LINK_S = 60.0  # reserve on the relay, publish the circuit, hear it, dial it
QUERY_S = 30.0
_POLL_S = 0.1


@attrs.frozen
class NatBenchSettings:
    kinds: tuple[NatKind, ...] = tuple(NatKind)  # both routers of a lab are of one kind
    runs: int = 3  # labs per kind
    queries: int = 10  # per run, one after another, from the node behind NAT 1
    punch_window_s: float = 15.0  # DCUtR tries 3 times, 2 s apart: decided well within
    service_time_s: float = 0.2  # the fake backend's, fixed
    layers: int = 1
    proposers: int = 2  # the relay node and the node behind NAT 2

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class NatRun:
    """One lab: when the two homes first connected, whether and when the link went direct,
    and the queries asked over it."""

    kind: NatKind
    first_link_s: float | None  # from starting both homes to a link between them (relayed)
    direct_after_s: float | None  # from that link to a direct one, None if never
    latencies_s: tuple[float, ...]  # the queries answered
    links: tuple[str, ...]  # the link to the node behind NAT 2 when each query was asked
    failed_queries: int

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _summary(kind: NatKind, runs: list[NatRun]) -> dict[str, Any]:
    connected = [run for run in runs if run.first_link_s is not None]
    direct = [run for run in connected if run.direct_after_s is not None]
    return {
        "kind": str(kind),
        "runs": len(runs),
        "connected_share": len(connected) / len(runs) if runs else 0.0,
        "answered_share": _answered_share(runs),
        "first_link_s_median": _median([r.first_link_s for r in connected]),
        "direct_share": len(direct) / len(runs) if runs else 0.0,
        "direct_after_s_median": _median([r.direct_after_s for r in direct]),
        "direct_after_s_max": max((r.direct_after_s or 0.0 for r in direct), default=None),
    }


def _answered_share(runs: list[NatRun]) -> float:
    answered = sum(len(run.latencies_s) for run in runs)
    asked = answered + sum(run.failed_queries for run in runs)
    return answered / asked if asked else 0.0


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@attrs.frozen
class NatBenchResult:
    settings: NatBenchSettings
    runs: tuple[NatRun, ...]

    def by_kind(self) -> list[dict[str, Any]]:
        return [
            _summary(kind, [run for run in self.runs if run.kind == kind])
            for kind in self.settings.kinds
        ]

    def latency_p50_s(self, link: str) -> float | None:
        """The median latency of every query asked over a `link` ("direct"/"relayed") link."""
        values = [
            latency
            for run in self.runs
            for latency, kind in zip(run.latencies_s, run.links, strict=True)
            if kind == link
        ]
        return percentile(values, 0.5) if values else None

    def latency_ratio(self) -> float | None:
        relayed, direct = self.latency_p50_s("relayed"), self.latency_p50_s("direct")
        return relayed / direct if relayed is not None and direct else None

    def goals(self) -> dict[str, bool | None]:
        kinds = self.by_kind()
        punchable = [k for k in kinds if k["kind"] == NatKind.PORT_PRESERVING]
        ratio = self.latency_ratio()
        return {
            "relayed_fallback_every_kind": all(
                k["connected_share"] == 1.0 and k["answered_share"] == 1.0 for k in kinds
            ),
            "direct_within_3s_port_preserving": (
                all(
                    k["direct_share"] == 1.0 and (k["direct_after_s_max"] or 0) <= DIRECT_WITHIN_S
                    for k in punchable
                )
                if punchable
                else None
            ),
            "relayed_latency_within_1_2x": None if ratio is None else ratio <= TARGET_LATENCY_RATIO,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_json(),
            "by_kind": self.by_kind(),
            "latency_p50_s": {
                "relayed": self.latency_p50_s("relayed"),
                "direct": self.latency_p50_s("direct"),
                "ratio": self.latency_ratio(),
            },
            "goals": self.goals(),
            "runs": [run.to_json() for run in self.runs],
        }


async def run_nat_bench(
    settings: NatBenchSettings, progress: ProgressCallback | None = None
) -> NatBenchResult:
    """Build a lab per run (routers of one kind), start a relay and a node behind each router,
    and measure how they come to reach each other and how fast queries are answered."""
    if reason := unavailable_reason():
        raise BenchError(reason)
    runs: list[NatRun] = []
    total = len(settings.kinds) * settings.runs
    for kind in settings.kinds:
        for _ in range(settings.runs):
            if progress is not None:
                progress(f"{kind}", len(runs), total)
            runs.append(await _one_run(kind, settings))
    if progress is not None:
        progress("done", total, total)
    return NatBenchResult(settings, tuple(runs))


async def _one_run(kind: NatKind, settings: NatBenchSettings) -> NatRun:
    options = ["-o", f"service_time={settings.service_time_s}"]
    homes = [home for home, _lan in HOME_LANS.values()]
    with tempfile.TemporaryDirectory(prefix="dmoa-bench-nat-") as base, open_lab(kind, kind) as lab:
        try:
            relay = start_node(lab, "relay", Path(base), options=options)
            await wait_status(relay, answering, START_S)
            started = trio.current_time()
            peer1, peer2 = (
                start_node(lab, home, Path(base), [relay.address()], options=options)
                for home in homes
            )
            first = await _link_within(peer1, peer2, FIRST_LINK_S, lambda link: link is not None)
            if first is None:
                return NatRun(kind, None, None, (), (), settings.queries)
            direct = await _link_within(
                peer1, peer2, settings.punch_window_s, lambda link: link == "direct"
            )
            return await _ask(kind, settings, peer1, peer2, first - started, direct, first)
        except LabError as exc:
            raise BenchError(f"the NAT lab failed: {exc}") from exc


async def _link_within(
    node: LabNode, peer: LabNode, timeout_s: float, wanted: Any
) -> float | None:
    """The time at which `node`'s link to `peer` is `wanted`, or None after `timeout_s`."""
    with trio.move_on_after(timeout_s):
        while True:
            status = await wait_status(node, answering, START_S)
            if wanted(link_to(status, peer.peer_id)):
                return trio.current_time()
            await trio.sleep(_POLL_S)
    return None


async def _ask(
    kind: NatKind,
    settings: NatBenchSettings,
    asker: LabNode,
    proposer: LabNode,
    first_link_s: float,
    direct_at: float | None,
    first_at: float,
) -> NatRun:
    latencies: list[float] = []
    links: list[str] = []
    failed = 0
    request = QueryRequest(
        "How far is the other router?", layers=settings.layers, proposers=settings.proposers
    )
    for _ in range(settings.queries):
        link = link_to(await wait_status(asker, answering, START_S), proposer.peer_id)
        began = trio.current_time()
        try:
            answer = await ask(asker, request, QUERY_S)
        except Exception:  # counted: the goal is every query answered
            failed += 1
            continue
        calls = {call["node"] for call in answer["trace"]["calls"]}
        if proposer.peer_id not in calls:
            failed += 1  # answered without the node behind the other router
            continue
        latencies.append(trio.current_time() - began)
        links.append(link or "none")
    direct_after = None if direct_at is None else direct_at - first_at
    return NatRun(kind, first_link_s, direct_after, tuple(latencies), tuple(links), failed)
