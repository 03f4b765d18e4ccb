"""Benchmarks of dmoa-p2p's layers, each measured against a baseline in the same run."""

from dmoa_p2p.bench._overlay import BenchError, ProgressCallback, run_overlay_bench
from dmoa_p2p.bench._results import (
    BARE_MEANS,
    DELIVERIES_MEAN,
    MEDIANS_MEAN,
    TARGET_CPU_RATIO,
    WINDOW_MEANS,
    BenchSettings,
    OverlayBenchResult,
    RunMetrics,
    VariantSummary,
)
from dmoa_p2p.bench._traffic import BARE, DMOA, VARIANTS

__all__ = [
    "BARE",
    "BARE_MEANS",
    "DELIVERIES_MEAN",
    "DMOA",
    "MEDIANS_MEAN",
    "TARGET_CPU_RATIO",
    "VARIANTS",
    "WINDOW_MEANS",
    "BenchError",
    "BenchSettings",
    "OverlayBenchResult",
    "ProgressCallback",
    "RunMetrics",
    "VariantSummary",
    "run_overlay_bench",
]
