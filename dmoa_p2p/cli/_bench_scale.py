"""`dmoa-p2p bench scale`: per-node cost of membership against the swarm's size."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from dmoa_p2p.bench import (
    ScaleResult,
    ScaleRow,
    ScaleSettings,
    plot_scale,
    rows_from_json,
    run_scale_bench,
    sizes,
)
from dmoa_p2p.cli._bench_run import measure_and_report, stage_bar
from dmoa_p2p.cli._common import console, json_option

_GOALS = {
    "real_traffic_ratio": "real: per-node control bytes, largest n within 1.2x of the smallest",
    "virtual_traffic_ratio": "virtual: the same, 100 to 2000 nodes",
    "tv_at_1000": "TV distance of proposer choice from uniform <= 0.1 at n = 1000",
    "joiner_drawn_at_1000": "a joiner drawn within 10 s at n = 1000",
    "crashed_dropped_at_1000": "a crashed node no longer drawn after 10 s at n = 1000",
    "real_32_joined": "a real 32-node swarm joined within 10 s",
    "real_32_no_graft_penalty": "no GossipSub GRAFT penalty warning in the real 32-node swarm",
    "real_32_idle_cpu": "idle CPU per node <= 0.04 of a core in the real 32-node swarm",
}


@click.command()
@click.option("--real", default="8,16,32", show_default=True, help="Real swarm sizes, or none.")
@click.option(
    "--virtual", default="100,1000,2000", show_default=True, help="Virtual swarm sizes, or none."
)
@click.option(
    "--window", type=click.FloatRange(min=1), default=30.0, show_default=True,
    help="Seconds each real swarm is measured, once joined and settled.",
)
@click.option(
    "--virtual-window", type=click.FloatRange(min=1), default=60.0, show_default=True,
    help="Virtual seconds each virtual swarm is measured, after a 20 s warm-up.",
)
@click.option(
    "--churn", type=click.FloatRange(0, 1), default=0.01, show_default=True,
    help="Share of a virtual swarm's nodes that crash (and as many that join) per minute.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of virtual swarms.")
@click.option(
    "--baseline",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A saved --json report of another design, drawn beside this one in the plot.",
)
@click.option(
    "--member-pythonpath",
    help="Run the real swarms' node processes from this source tree (another version; run "
    "the bench outside a checkout, as Python looks in the working directory first).",
)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG here.")
@json_option
def scale(
    real: str,
    virtual: str,
    window: float,
    virtual_window: float,
    churn: float,
    seed: int,
    baseline: Path | None,
    member_pythonpath: str | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Per-node cost of membership and proposer choice as the swarm grows.

    Real swarms: idle `dmoa-p2p node` processes on 127.0.0.1 (fake backend), their control
    traffic (shuffle messages and bytes), connections, idle CPU, time to join and GossipSub
    GRAFT penalty warnings. Virtual swarms: the real node code on the in-memory overlay under
    a virtual clock, with churn; also how soon a joiner is drawn as a proposer and a crashed
    node is not, and the total-variation distance of proposer choice from uniform.
    """
    settings = ScaleSettings(
        real=sizes(real),
        virtual=sizes(virtual),
        real_window_s=window,
        virtual_window_s=virtual_window,
        churn_per_min=churn,
        seed=seed,
        member_pythonpath=member_pythonpath,
    )
    old = rows_from_json(json.loads(baseline.read_text())) if baseline else ()

    async def measure() -> ScaleResult:
        with stage_bar(enabled=not as_json) as progress:
            result = await run_scale_bench(settings, progress=progress)
        if plot is not None:
            plot_scale(result.rows, old, plot)
        return result

    measure_and_report(measure, as_json, _print_scale)
    if plot is not None and not as_json:
        console.print(f"plot written to {plot}")


def _number(value: float | None, form: str = "{:.1f}") -> str:
    return "-" if value is None else form.format(value)


def _print_scale(result: ScaleResult) -> None:
    table = Table(title="scale: per node, medians over the nodes live through the window")
    columns = (
        "swarm", "msgs/s", "bytes/s out", "bytes/s in", "conns (max)", "idle CPU",
        "joined s", "joiner drawn s (max)", "crashed dropped s (max)", "TV", "wall s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "swarm" else "right")
    for row in result.rows:
        table.add_row(*_cells(row))
    console.print(table)
    for name, goal in result.goals().items():
        verdict = "[green]met[/]" if goal["met"] else "[red]not met[/]"
        console.print(f"{_GOALS.get(name, name)}: {_number(goal['value'], '{:.3g}')} {verdict}")


def _cells(row: ScaleRow) -> tuple[str, ...]:
    never = f", {row.joiners_never_drawn} never" if row.joiners_never_drawn else ""
    return (
        f"{row.kind} {row.nodes}",
        _number(row.messages_per_s),
        _number(row.bytes_sent_per_s, "{:.0f}"),
        _number(row.bytes_received_per_s, "{:.0f}"),
        f"{row.connections:.0f} ({row.max_connections})",
        _number(row.idle_cpu, "{:.3f}"),
        _number(row.joined_s),
        _number(max(row.join_drawn_s, default=None)) + never,
        _number(max(row.crash_dropped_s, default=None)),
        _number(row.tv, "{:.3f}"),
        f"{row.wall_s:.0f}",
    )
