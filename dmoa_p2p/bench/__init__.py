"""Benchmarks of dmoa-p2p's layers, each measured against a baseline in the same run."""

from dmoa_p2p.bench._backend import run_backend_bench
from dmoa_p2p.bench._backend_results import (
    BACKEND_BARE_MEANS,
    BACKEND_METHOD,
    BARE_PATH,
    QUEUE_PATH,
    BackendBenchResult,
    BackendBenchSettings,
)
from dmoa_p2p.bench._flood import run_flood_bench
from dmoa_p2p.bench._flood_peer import FloodCounts, FloodLimits
from dmoa_p2p.bench._flood_results import SHARE_MEANS, FloodBenchResult, FloodSettings
from dmoa_p2p.bench._http import HTTP_VARIANTS, HttpBenchResult, run_http_bench
from dmoa_p2p.bench._moa import (
    DEFAULT_MAX_TOKENS,
    SHARED_CPU_NOTE,
    MoaBenchResult,
    ModelMoaBenchResult,
    QuerySplit,
    run_moa_bench,
    run_model_moa_bench,
)
from dmoa_p2p.bench._nat import NatBenchResult, NatBenchSettings, NatRun, run_nat_bench
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
from dmoa_p2p.bench._scale import ScaleSettings, run_scale_bench, sizes
from dmoa_p2p.bench._scale_plot import plot_scale
from dmoa_p2p.bench._scale_results import ScaleResult, ScaleRow, rows_from_json
from dmoa_p2p.bench._traffic import BARE, DMOA, VARIANTS

__all__ = [
    "BACKEND_BARE_MEANS",
    "BACKEND_METHOD",
    "BARE",
    "BARE_MEANS",
    "BARE_PATH",
    "DEFAULT_MAX_TOKENS",
    "DELIVERIES_MEAN",
    "DMOA",
    "HTTP_VARIANTS",
    "MEDIANS_MEAN",
    "QUEUE_PATH",
    "SHARED_CPU_NOTE",
    "SHARE_MEANS",
    "TARGET_CPU_RATIO",
    "VARIANTS",
    "WINDOW_MEANS",
    "BackendBenchResult",
    "BackendBenchSettings",
    "BenchError",
    "BenchSettings",
    "FloodBenchResult",
    "FloodCounts",
    "FloodLimits",
    "FloodSettings",
    "HttpBenchResult",
    "MoaBenchResult",
    "ModelMoaBenchResult",
    "NatBenchResult",
    "NatBenchSettings",
    "NatRun",
    "OverlayBenchResult",
    "ProgressCallback",
    "QuerySplit",
    "RunMetrics",
    "ScaleResult",
    "ScaleRow",
    "ScaleSettings",
    "VariantSummary",
    "plot_scale",
    "rows_from_json",
    "run_backend_bench",
    "run_flood_bench",
    "run_http_bench",
    "run_moa_bench",
    "run_model_moa_bench",
    "run_nat_bench",
    "run_overlay_bench",
    "run_scale_bench",
    "sizes",
]
