"""`dmoa-p2p bench nat`: two nodes behind two NAT routers, in the NAT lab (root, Linux)."""

from __future__ import annotations

import click
from rich.table import Table

from dmoa_p2p.bench import NatBenchResult, NatBenchSettings, run_nat_bench
from dmoa_p2p.cli._bench_run import measure_and_report, stage_bar
from dmoa_p2p.cli._common import console, json_option
from dmoa_p2p.testing.netlab import NatKind

_GOALS = {
    "relayed_fallback_every_kind": "every kind connects and answers every query (relayed)",
    "direct_within_3s_port_preserving": "a direct link within 3 s behind port-preserving NATs",
    "relayed_latency_within_1_2x": "relayed query p50 within 1.2x of direct",
}


@click.command()
@click.option(
    "--kind",
    "kinds",
    type=click.Choice([str(kind) for kind in NatKind]),
    multiple=True,
    help="NAT kind of both routers (repeatable). Default: every kind.",
)
@click.option(
    "--runs", type=click.IntRange(1, 50), default=3, show_default=True, help="Labs per kind."
)
@click.option(
    "--queries", type=click.IntRange(1, 500), default=10, show_default=True, help="Queries per lab."
)
@click.option(
    "--service-time",
    type=click.FloatRange(min=0.0),
    default=0.2,
    show_default=True,
    help="Fixed service time of the fake backend, seconds.",
)
@json_option
def nat(
    kinds: tuple[str, ...], runs: int, queries: int, service_time: float, as_json: bool
) -> None:
    """Two nodes behind two NAT routers reach each other through a public relay node.

    Builds the NAT lab (network namespaces; needs root, iproute2, iptables, conntrack) once
    per run: a relay on "the internet", a node behind each router, fake backends. Measures
    the time to the first (relayed) connection between the two homes, whether and when hole
    punching makes it direct, and query latency from home 1 (M=1, k=2: the relay node and
    home 2 propose) over relayed and direct links.
    """
    settings = NatBenchSettings(
        kinds=tuple(NatKind(kind) for kind in kinds) or tuple(NatKind),
        runs=runs,
        queries=queries,
        service_time_s=service_time,
    )

    async def measure() -> NatBenchResult:
        with stage_bar(enabled=not as_json) as progress:
            return await run_nat_bench(settings, progress=progress)

    measure_and_report(measure, as_json, _print_nat)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_nat(result: NatBenchResult) -> None:
    s = result.settings
    table = Table(
        title=f"nat: {s.runs} labs per kind, {s.queries} queries each, fake backend "
        f"{s.service_time_s * 1000:.0f} ms",
        caption="times from starting both homes; direct: after the first link",
    )
    for column in ("NAT kind", "connected", "answered", "first link s", "direct", "direct s"):
        table.add_column(column, justify="left" if column == "NAT kind" else "right")
    for kind in result.by_kind():
        table.add_row(
            kind["kind"],
            f"{kind['connected_share']:.0%}",
            f"{kind['answered_share']:.0%}",
            _seconds(kind["first_link_s_median"]),
            f"{kind['direct_share']:.0%}",
            _seconds(kind["direct_after_s_median"]),
        )
    console.print(table)
    relayed, direct = result.latency_p50_s("relayed"), result.latency_p50_s("direct")
    ratio = result.latency_ratio()
    console.print(
        f"query latency p50: relayed {_seconds(relayed)} s, direct {_seconds(direct)} s, "
        f"ratio {'-' if ratio is None else f'{ratio:.2f}'}"
    )
    for goal, met in result.goals().items():
        verdict = "not measured" if met is None else "[green]met[/]" if met else "[red]not met[/]"
        console.print(f"{_GOALS[goal]}: {verdict}")
