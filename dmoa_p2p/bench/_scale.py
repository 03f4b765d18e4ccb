"""`bench scale`: real swarms of 8–32 node processes and virtual swarms of 100–2000 nodes."""

from __future__ import annotations

import attrs
import trio

from dmoa_p2p.bench._overlay import ProgressCallback
from dmoa_p2p.bench._scale_real import RealScaleSettings, run_real_scale
from dmoa_p2p.bench._scale_results import ScaleResult, ScaleRow
from dmoa_p2p.bench._scale_virtual import VirtualScaleSettings, run_virtual_scale


@attrs.frozen
class ScaleSettings:
    real: tuple[int, ...] = (8, 16, 32)
    virtual: tuple[int, ...] = (100, 1000, 2000)
    real_window_s: float = 30.0
    virtual_window_s: float = 60.0
    virtual_warmup_s: float = 20.0
    churn_per_min: float = 0.01
    seed: int = 1
    member_pythonpath: str | None = None


async def run_scale_bench(
    settings: ScaleSettings, progress: ProgressCallback | None = None
) -> ScaleResult:
    """Each swarm in turn, real ones first (one heavy thing at a time on a small machine)."""
    rows: list[ScaleRow] = []
    for nodes in settings.real:
        real = RealScaleSettings(
            nodes, window_s=settings.real_window_s, member_pythonpath=settings.member_pythonpath
        )
        rows.append(await run_real_scale(real, _prefixed(progress, f"real {nodes}")))
    for nodes in settings.virtual:
        virtual = VirtualScaleSettings(
            nodes,
            warmup_s=settings.virtual_warmup_s,
            window_s=settings.virtual_window_s,
            churn_per_min=settings.churn_per_min,
            seed=settings.seed,
        )
        report = _prefixed(progress, f"virtual {nodes}")
        rows.append(await trio.to_thread.run_sync(run_virtual_scale, virtual, report))
    return ScaleResult(tuple(rows), attrs.asdict(settings))


def _prefixed(progress: ProgressCallback | None, swarm: str) -> ProgressCallback | None:
    if progress is None:
        return None
    report = progress
    return lambda stage, done, total: report(f"{swarm}: {stage}", done, total)


def sizes(text: str) -> tuple[int, ...]:
    """"8,16,32" as (8, 16, 32); "" or "none" as ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(int(part) for part in text.split(","))


