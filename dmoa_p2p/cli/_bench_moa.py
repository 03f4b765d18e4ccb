"""`dmoa-p2p bench moa`: MoA latency on a localhost swarm against the LLM critical path."""

from __future__ import annotations

import click
import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from dmoa_p2p.bench._moa import MoaBenchResult, run_moa_bench
from dmoa_p2p.cli._bench import bench
from dmoa_p2p.cli._common import console, json_option, print_json, run_until_signalled


@bench.command()
@click.option("--nodes", type=click.IntRange(2, 32), default=5, show_default=True)
@click.option("--layers", "-M", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--proposers", "-k", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option(
    "--service-time",
    type=click.FloatRange(min=0.001),
    default=0.2,
    show_default=True,
    help="Fixed service time of the fake backend, seconds.",
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
    nodes: int, layers: int, proposers: int, service_time: float, queries: int, as_json: bool
) -> None:
    """End-to-end query latency against (M+1) service times (empty queues, fake backend).

    All nodes run in this process on 127.0.0.1 with real py-libp2p; the difference between
    the latency and the LLM critical path is what dmoa-p2p itself costs.
    """
    if proposers > nodes - 1:
        raise click.BadParameter(f"{proposers} proposers need {proposers + 1} nodes")
    results: list[MoaBenchResult] = []

    async def main(nursery: trio.Nursery) -> None:
        bar = Progress(
            TextColumn("queries"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=as_json,
        )
        with bar:
            task = bar.add_task("queries", total=queries)
            results.append(
                await run_moa_bench(
                    nodes,
                    layers,
                    proposers,
                    service_time,
                    queries,
                    progress=lambda done: bar.update(task, completed=done),
                )
            )

    run_until_signalled(main)
    if not results:
        raise click.ClickException("interrupted")
    result = results[0].to_json()
    if as_json:
        print_json(result)
        return
    table = Table(
        title=f"MoA: {nodes} nodes, M={layers}, k={proposers}, "
        f"service {service_time * 1000:.0f} ms, {queries} queries"
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
