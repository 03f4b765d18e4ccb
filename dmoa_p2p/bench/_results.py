"""Overlay benchmark results: per-run metrics, per-variant medians, the overhead verdict."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import attrs

from dmoa_p2p.bench._traffic import BARE, DMOA, VARIANTS
from dmoa_p2p.simulate import percentile

TARGET_CPU_RATIO = 1.10

BARE_MEANS = (
    "bare: the same py-libp2p nodes and overlay code (open_libp2p_overlay: GossipSub v1.1, "
    "strict signing, same mesh degrees and heartbeat, same back-pressure and drain), on a "
    "second topic, with raw bytes padded to the envelope size and an accept-all topic "
    "validator; dmoa adds exactly our layer: seal, MessageGate.admit as topic validator, "
    "decode_envelope on receipt"
)
DELIVERIES_MEAN = (
    "deliveries = messages x (nodes - 1): each message to every other node; the publisher's "
    "own copy is validated and decoded in both variants but not counted"
)
WINDOW_MEANS = (
    "publishes wait while `window` messages are not yet at every receiver, on top of the "
    "overlay's own back-pressure, which sees only libp2p's queues and not the loopback "
    "socket buffers behind them (without a window, latency measures those buffers)"
)
MEDIANS_MEAN = (
    "one swarm, a topic per variant; each variant's messages go out in `rounds` blocks, "
    "alternating bare, dmoa, dmoa, bare, ... so that load from other processes hits both "
    "alike; each metric is the median over a variant's blocks, deliveries their sum; the "
    "CPU ratio is the median of the per-round dmoa/bare ratios"
)


_at_least_1 = attrs.validators.ge(1)


@attrs.frozen
class BenchSettings:
    """What `bench overlay` was asked to do (payload_bytes: the envelope's wire size)."""

    nodes: int = attrs.field(validator=attrs.validators.ge(2))
    messages: int = attrs.field(validator=_at_least_1)
    warmup: int = attrs.field(validator=attrs.validators.ge(0))
    # blocks per variant; every block needs a message
    rounds: int = attrs.field(validator=_at_least_1)
    # messages published but not yet delivered to every receiver
    window: int = attrs.field(validator=_at_least_1)
    payload_bytes: int = attrs.field(validator=_at_least_1)

    def __attrs_post_init__(self) -> None:
        if self.rounds > self.messages:
            raise ValueError(f"{self.rounds} rounds need at least as many messages")


@attrs.frozen
class RunMetrics:
    """What one block of one variant's messages measured, from first publish to last receipt."""

    variant: str
    round: int
    deliveries: int
    expected_deliveries: int
    p50_latency_ms: float
    p99_latency_ms: float
    deliveries_per_s: float
    cpu_ms_per_delivery: float
    # the part spent in the variant's own code: sealing, validating, decoding (bare: ~nothing)
    layer_cpu_ms_per_delivery: float
    cpu_s: float
    wall_s: float

    @classmethod
    def measure(
        cls,
        variant: str,
        round_: int,
        expected: int,
        latencies_s: Sequence[float],
        cpu_s: float,
        wall_s: float,
        layer_cpu_s: float,
    ) -> RunMetrics:
        deliveries = len(latencies_s)

        def per_delivery_ms(seconds: float) -> float:
            return seconds * 1e3 / deliveries if deliveries else math.nan

        return cls(
            variant=variant,
            round=round_,
            deliveries=deliveries,
            expected_deliveries=expected,
            p50_latency_ms=percentile(latencies_s, 0.50) * 1e3,
            p99_latency_ms=percentile(latencies_s, 0.99) * 1e3,
            deliveries_per_s=deliveries / wall_s if wall_s > 0 else math.nan,
            cpu_ms_per_delivery=per_delivery_ms(cpu_s),
            layer_cpu_ms_per_delivery=per_delivery_ms(layer_cpu_s),
            cpu_s=cpu_s,
            wall_s=wall_s,
        )


_MEDIAN_FIELDS = (
    "p50_latency_ms",
    "p99_latency_ms",
    "deliveries_per_s",
    "cpu_ms_per_delivery",
    "layer_cpu_ms_per_delivery",
    "cpu_s",
    "wall_s",
)


@attrs.frozen
class VariantSummary:
    """One variant's medians over its blocks (`runs`); deliveries are summed."""

    variant: str
    runs: tuple[RunMetrics, ...]

    @property
    def deliveries(self) -> int:
        return sum(run.deliveries for run in self.runs)

    @property
    def expected_deliveries(self) -> int:
        return sum(run.expected_deliveries for run in self.runs)

    def median(self, field: str) -> float:
        return float(statistics.median(getattr(run, field) for run in self.runs))

    def to_json(self) -> dict[str, Any]:
        medians = {field: _rounded(self.median(field)) for field in _MEDIAN_FIELDS}
        return {
            "deliveries": self.deliveries,
            "expected_deliveries": self.expected_deliveries,
            **medians,
            "runs": [
                {key: _rounded(value) for key, value in attrs.asdict(run).items()}
                for run in self.runs
            ],
        }


@attrs.frozen
class OverlayBenchResult:
    """Both variants of one `bench overlay` invocation and the dmoa/bare CPU ratio."""

    settings: BenchSettings
    runs: tuple[RunMetrics, ...]
    target_ratio: float = TARGET_CPU_RATIO

    def summary(self, variant: str) -> VariantSummary:
        return VariantSummary(variant, tuple(r for r in self.runs if r.variant == variant))

    @property
    def cpu_ratio(self) -> float:
        """The median over rounds of dmoa/bare CPU per delivery, each pair run back to back.

        Pairing cancels what drifts between rounds (other processes' load on a shared
        machine), which the ratio of the two variants' medians does not.
        """
        return statistics.median(self.round_ratios)

    @property
    def cpu_ratio_of_medians(self) -> float:
        bare = self.summary(BARE).median("cpu_ms_per_delivery")
        return self.summary(DMOA).median("cpu_ms_per_delivery") / bare

    @property
    def round_ratios(self) -> list[float]:
        """dmoa over bare CPU per delivery within each round: a check on the medians' spread."""
        bare = {r.round: r.cpu_ms_per_delivery for r in self.runs if r.variant == BARE}
        return [
            r.cpu_ms_per_delivery / bare[r.round]
            for r in self.runs
            if r.variant == DMOA and r.round in bare
        ]

    @property
    def cpu_ratio_from_layer_time(self) -> float:
        """The ratio the directly timed layer code alone explains: bare plus dmoa's extra code.

        Timed inline, it is steady under load from other processes, but it leaves out
        indirect costs (more garbage to collect, colder caches).
        """
        bare, dmoa = self.summary(BARE), self.summary(DMOA)
        field = "layer_cpu_ms_per_delivery"
        extra = dmoa.median(field) - bare.median(field)
        return 1.0 + extra / bare.median("cpu_ms_per_delivery")

    @property
    def all_delivered(self) -> bool:
        return all(run.deliveries == run.expected_deliveries for run in self.runs)

    @property
    def passed(self) -> bool:
        return self.all_delivered and self.cpu_ratio <= self.target_ratio

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "overlay",
            **attrs.asdict(self.settings),
            "topology": "full mesh on 127.0.0.1, all nodes in one process",
            "bare_means": BARE_MEANS,
            "deliveries_mean": DELIVERIES_MEAN,
            "window_means": WINDOW_MEANS,
            "medians_mean": MEDIANS_MEAN,
            "variants": {v: self.summary(v).to_json() for v in VARIANTS},
            "cpu_per_delivery_ratio": _rounded(self.cpu_ratio),
            "cpu_ratio_per_round": [_rounded(r) for r in self.round_ratios],
            "cpu_ratio_of_medians": _rounded(self.cpu_ratio_of_medians),
            "cpu_ratio_from_layer_time": _rounded(self.cpu_ratio_from_layer_time),
            "target_ratio": self.target_ratio,
            "all_delivered": self.all_delivered,
            "pass": self.passed,
        }


def _rounded(value: Any) -> Any:
    # NaN (nothing delivered) is not JSON: null instead
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value
