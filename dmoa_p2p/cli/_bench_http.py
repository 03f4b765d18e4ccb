"""`dmoa-p2p bench http`: what the HTTP API adds to a request, against calling the node."""

from __future__ import annotations

import click
from rich.table import Table

from dmoa_p2p.bench import HTTP_VARIANTS, HttpBenchResult, run_http_bench
from dmoa_p2p.cli._bench import bench
from dmoa_p2p.cli._bench_run import count_bar, measure_and_report
from dmoa_p2p.cli._common import console, json_option


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

    async def measure() -> HttpBenchResult:
        with count_bar("requests per variant", requests, enabled=not as_json) as progress:
            return await run_http_bench(
                requests, layers, proposers, service_time, rounds, progress=progress
            )

    measure_and_report(measure, as_json, _show)


def _show(http_result: HttpBenchResult) -> None:
    result = http_result.to_json()
    table = Table(
        title=f"HTTP API: M={http_result.layers}, k={http_result.proposers}, "
        f"fake service {http_result.service_time_s * 1000:g} ms"
    )
    for column in ("", "requests/s", "p50 ms", "p99 ms", "added p50 ms"):
        table.add_column(column, justify="right")
    variants, added = result["variants"], result["added_p50_ms"]
    for name in HTTP_VARIANTS:
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
