"""`dmoa-p2p bench moa`: MoA latency on a localhost swarm against the LLM critical path."""

from __future__ import annotations

import click
from rich.table import Table

from dmoa_p2p.bench import (
    DEFAULT_MAX_TOKENS,
    SHARED_CPU_NOTE,
    MoaBenchResult,
    ModelMoaBenchResult,
    run_moa_bench,
    run_model_moa_bench,
)
from dmoa_p2p.cli._bench import bench
from dmoa_p2p.cli._bench_run import count_bar, measure_and_report
from dmoa_p2p.cli._common import (
    backend_options_with_default,
    console,
    json_option,
    parse_backend_options,
)

FAKE = "fake"
DEFAULT_SERVICE_TIME_S = 0.2


@bench.command()
@click.option("--nodes", type=click.IntRange(2, 32), default=5, show_default=True)
@click.option("--layers", "-M", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--proposers", "-k", type=click.IntRange(1, 16), default=2, show_default=True)
@backend_options_with_default(FAKE)
@click.option(
    "--service-time",
    type=click.FloatRange(min=0.001),
    default=None,
    help=f"Fixed service time of the fake backend, seconds. [default: {DEFAULT_SERVICE_TIME_S}]",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(1),
    default=DEFAULT_MAX_TOKENS,
    show_default=True,
    help="Longest answer of every LLM call.",
)
@click.option(
    "--queries",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Queries, one after another, from every node in turn.",
)
@json_option
def moa(
    nodes: int,
    layers: int,
    proposers: int,
    backend: str | None,
    backend_option: tuple[str, ...],
    service_time: float | None,
    max_tokens: int,
    queries: int,
    as_json: bool,
) -> None:
    """End-to-end query latency against the LLM time on its critical path (empty queues).

    All nodes run in this process on 127.0.0.1 with real py-libp2p. With the fake backend
    (the default) the critical path is (M+1) fixed service times; with a real one (e.g.
    --backend llama-cpp -o n_threads=1) it is read from each query's trace: per layer the
    longest service time, plus the final aggregation's.
    """
    if proposers > nodes - 1:
        raise click.BadParameter(f"{proposers} proposers need {proposers + 1} nodes")
    name = backend or FAKE
    options = parse_backend_options(backend_option)
    if name == FAKE:
        if options:
            raise click.BadParameter("the fake backend is set with --service-time", param_hint="-o")
        seconds = service_time if service_time is not None else DEFAULT_SERVICE_TIME_S
        _fake_moa(nodes, layers, proposers, seconds, max_tokens, queries, as_json)
        return
    if service_time is not None:
        hint = "--service-time"
        raise click.BadParameter(f"it is for the fake backend, not {name}", param_hint=hint)
    _model_moa(nodes, layers, proposers, name, options, max_tokens, queries, as_json)


def _fake_moa(
    nodes: int, layers: int, proposers: int, service_time: float, max_tokens: int,
    queries: int, as_json: bool,
) -> None:
    async def measure() -> MoaBenchResult:
        with count_bar("queries", queries, enabled=not as_json) as progress:
            return await run_moa_bench(
                nodes, layers, proposers, service_time, queries,
                progress=progress, max_tokens=max_tokens,
            )

    measure_and_report(measure, as_json, _print_fake)


def _print_fake(moa_result: MoaBenchResult) -> None:
    result = moa_result.to_json()
    table = Table(
        title=f"MoA: {moa_result.nodes} nodes, M={moa_result.layers}, k={moa_result.proposers}, "
        f"service {moa_result.service_time_s * 1000:.0f} ms, {moa_result.queries} queries"
    )
    table.add_column("")
    table.add_column("seconds", justify="right")
    table.add_row("LLM critical path (M+1)·service", f"{result['critical_path_s']:.3f}")
    for key in ("median", "p90", "min", "max"):
        table.add_row(f"end-to-end latency, {key}", f"{result['latency_s'][key]:.3f}")
    table.add_row("overhead, median", f"{result['overhead_s']['median']:.3f}")
    table.add_row("overhead allowed", f"{result['overhead_s']['allowed']:.3f}")
    console.print(table)
    verdict = "[green]met[/]" if result["passed"] else "[red]not met[/]"
    console.print(
        f"overhead {result['overhead_per_layer_ms']:.1f} ms per layer "
        f"({100 * result['overhead_fraction']:.1f}% of the critical path); "
        f"target {result['target']}: {verdict}"
    )


def _model_moa(
    nodes: int, layers: int, proposers: int, backend: str, options: dict[str, str],
    max_tokens: int, queries: int, as_json: bool,
) -> None:
    async def measure() -> ModelMoaBenchResult:
        with count_bar("queries", queries, enabled=not as_json) as progress:
            return await run_model_moa_bench(
                nodes, layers, proposers, backend, options, queries,
                max_tokens=max_tokens, progress=progress,
            )

    measure_and_report(measure, as_json, _print_model)


def _print_model(result: ModelMoaBenchResult) -> None:
    settings = ", ".join(f"{k}={v}" for k, v in result.backend_options)
    table = Table(
        title=f"MoA: {result.nodes} nodes, M={result.layers}, k={result.proposers}, "
        f"{result.backend}{f' ({settings})' if settings else ''}, "
        f"max {result.max_tokens} tokens, {len(result.queries)} queries",
        caption="seconds; LLM = per layer the longest service time, summed (incl. aggregation)",
    )
    for column in ("query", "end-to-end", "LLM", "other", "of which queue wait", "calls",
                   "tokens"):
        table.add_column(column, justify="right")
    for i, query in enumerate(result.queries, start=1):
        table.add_row(
            str(i), f"{query.total_s:.3f}", f"{query.llm_s:.3f}", f"{query.other_s:.3f}",
            f"{query.queue_wait_s:.3f}", str(query.calls), str(query.completion_tokens),
        )
    median = result.median
    table.add_row(
        "median", f"{median('total_s'):.3f}", f"{median('llm_s'):.3f}",
        f"{median('other_s'):.3f}", f"{median('queue_wait_s'):.3f}", f"{median('calls'):g}",
        f"{median('completion_tokens'):g}", style="bold",
    )
    console.print(table)
    share = 100 * median("other_s") / median("total_s")
    console.print(f"other: median {median('other_s'):.3f} s, {share:.1f}% of the median latency")
    console.print(SHARED_CPU_NOTE, style="dim")
