"""`dmoa-p2p bench http`: what the HTTP API adds to a request, against calling the node."""

from __future__ import annotations

import click
import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from dmoa_p2p.bench._http import VARIANTS, HttpBenchResult, run_http_bench
from dmoa_p2p.cli._bench import bench
from dmoa_p2p.cli._common import console, json_option, print_json, run_until_signalled


@bench.command("http")
@click.option(
    "--requests",
    type=click.IntRange(1),
    default=500,
    show_default=True,
    help="Requests per variant, one at a time.",
)
@click.option("--layers", "-M", type=click.IntRange(0, 4), default=0, show_default=True)
@click.option("--proposers", "-k", type=click.IntRange(0, 8), default=0, show_default=True)
@click.option(
    "--service-time",
    type=click.FloatRange(min=0),
    default=0.01,
    show_default=True,
    help="Fixed service time of the fake backend, seconds.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Blocks per variant, interleaved.",
)
@json_option
def http_bench(
    requests: int, layers: int, proposers: int, service_time: float, rounds: int, as_json: bool
) -> None:
    """Requests/s and p50/p99 latency: Node.ask against the same through the HTTP API.

    One node per proposer plus the asking one run in this process on 127.0.0.1 with the fake
    backend; the HTTP client (httpx, one keep-alive connection) runs in the same process too.
    `asgi` calls the node's HTTP app in-process: dmoa-p2p's own share of the HTTP cost.
    """
    if (layers == 0) != (proposers == 0):
        raise click.BadParameter("use -M 0 -k 0 (the local model) or both above 0")
    results: list[HttpBenchResult] = []

    async def main(nursery: trio.Nursery) -> None:
        bar = Progress(
            TextColumn("requests per variant"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=as_json,
        )
        with bar:
            task = bar.add_task("requests", total=requests)
            results.append(
                await run_http_bench(
                    requests,
                    layers,
                    proposers,
                    service_time,
                    rounds,
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
    _show(result, layers, proposers, service_time)


def _show(result: dict[str, object], layers: int, proposers: int, service_time: float) -> None:
    table = Table(
        title=f"HTTP API: M={layers}, k={proposers}, fake service {service_time * 1000:g} ms"
    )
    for column in ("", "requests/s", "p50 ms", "p99 ms", "added p50 ms"):
        table.add_column(column, justify="right")
    variants = result["variants"]
    added = result["added_p50_ms"]
    assert isinstance(variants, dict) and isinstance(added, dict)
    for name in VARIANTS:
        v = variants[name]
        table.add_row(
            name,
            f"{v['requests_per_s']:.1f}",
            f"{v['p50_ms']:.2f}",
            f"{v['p99_ms']:.2f}",
            "" if name == "direct" else f"{added[name]:+.2f}",
        )
    console.print(table)
    verdict = "[green]met[/]" if result["passed"] else "[red]not met[/]"
    console.print(f"target: {result['target']}: {verdict}")
