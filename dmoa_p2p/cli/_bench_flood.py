"""`dmoa-p2p bench flood`: an honest user's latency while one peer floods the node it asks."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from dmoa_p2p.bench import (
    SHARE_MEANS,
    FloodBenchResult,
    FloodLimits,
    FloodSettings,
    run_flood_bench,
)
from dmoa_p2p.cli._bench_run import measure_and_report, stage_bar
from dmoa_p2p.cli._common import console, json_option


@click.command()
@click.option("--nodes", type=click.IntRange(3, 32), default=4, show_default=True)
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
    help="The honest user's queries per phase, one after another, all to node 0.",
)
@click.option("--layers", "-M", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--proposers", "-k", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option(
    "--flood-warmup",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds of flood before phase B's queries start (its burst passes).",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(0),
    default=20_000,
    show_default=True,
    help="At most this many tasks from the flooder.",
)
@click.option(
    "--max-shuffles",
    type=click.IntRange(0),
    default=20_000,
    show_default=True,
    help="At most this many shuffle requests (each with its own record) from the flooder.",
)
@click.option(
    "--flooder",
    type=click.Choice(["process", "in-process"]),
    default="process",
    show_default=True,
    help="Run the flooder in a process of its own (its CPU is not the swarm's) or in this one.",
)
@json_option
def flood(
    nodes: int,
    service_time: float,
    queries: int,
    layers: int,
    proposers: int,
    flood_warmup: float,
    max_tasks: int,
    max_shuffles: int,
    flooder: str,
    as_json: bool,
) -> None:
    """One peer floods node 0 with valid tasks and shuffles: its honest user's latency.

    A localhost swarm of real py-libp2p nodes in this process (fake backend). Phase A: the
    user's queries without a flood; phase B: the same while a raw py-libp2p peer (not a
    node) sends node 0 signed tasks, and shuffle requests carrying its own signed record,
    as fast as it can. Goals: p50 latency ratio <= 1.3, and the flooder's share of node 0's
    model <= 1/n (+ a tolerance).
    """
    if proposers > nodes - 1:
        raise click.BadParameter(f"{proposers} proposers need {proposers + 1} nodes")
    settings = FloodSettings(
        nodes=nodes,
        service_time_s=service_time,
        queries=queries,
        layers=layers,
        proposers=proposers,
        flood_warmup_s=flood_warmup,
        flooder="process" if flooder == "process" else "in-process",
        limits=FloodLimits(max_tasks=max_tasks, max_shuffles=max_shuffles),
    )

    async def measure() -> FloodBenchResult:
        with stage_bar(enabled=not as_json) as progress:
            return await run_flood_bench(settings, progress=progress)

    measure_and_report(measure, as_json, _print_flood)


def _verdict(met: bool) -> str:
    return "[green]met[/]" if met else "[red]not met[/]"


def _causes(counts: dict[str, Any]) -> str:
    return ", ".join(f"{cause} {n}" for cause, n in counts.items()) or "-"


def _print_flood(result: FloodBenchResult) -> None:
    report = result.to_json()
    s = result.settings
    quiet, flooded = report["phases"]["no_flood"], report["phases"]["flood"]
    table = Table(
        title=f"flood: {s.nodes} nodes, M={s.layers}, k={s.proposers}, service "
        f"{s.service_time_s * 1000:.0f} ms, {s.queries} queries per phase to node 0",
        caption=f"flooder in {'its own process' if s.flooder == 'process' else 'this process'}",
    )
    for column in ("", "no flood", "flood", "flood / no flood"):
        table.add_column(column, justify="left" if not column else "right")
    for key in ("p50", "p90"):
        a, b = quiet["latency_s"][key], flooded["latency_s"][key]
        table.add_row(f"latency {key} (s)", f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}")
    a, b = (phase["aggregation_queue_wait_s"]["median"] for phase in (quiet, flooded))
    table.add_row("node 0's aggregation queue wait, median (s)", f"{a:.3f}", f"{b:.3f}", "")
    a, b = (f"{p['answered']} / {sum(p['refused'].values())}" for p in (quiet, flooded))
    table.add_row("answered / refused queries", a, b, "")
    table.add_row(
        "queries that drew the flooder as a proposer",
        str(quiet["asked_flooder"]),
        str(flooded["asked_flooder"]),
        "",
    )
    table.add_row(
        "node 0's services", str(quiet["victim_services"]), str(flooded["victim_services"]), ""
    )
    console.print(table)

    f, total, window = report["flooder"], result.total, report["flooder"]["window"]
    flood_table = Table(
        title=f"the flooder, over its {total.flood_s:.1f} s flood", show_header=False
    )
    flood_table.add_column("")
    flood_table.add_column("", justify="right")
    flood_table.add_row("tasks sent", f"{total.sent} ({f['tasks_per_s']:.0f}/s)")
    flood_table.add_row("  served (proposals back)", str(total.proposals))
    flood_table.add_row("  refused", str(total.refusals))
    flood_table.add_row("  unacknowledged (send failed)", str(total.unacknowledged))
    flood_table.add_row("  acknowledged, no reply", str(total.unanswered + total.sending))
    flood_table.add_row("node 0's refusals by cause", _causes(f["victim_task_refusals"]))
    flood_table.add_row("send errors", _causes(total.ack_errors))
    flood_table.add_row(
        "shuffle requests delivered",
        f"{total.shuffles_delivered} ({f['shuffles_delivered_per_s']:.0f}/s)",
    )
    flood_table.add_row("shuffle requests refused or failed", _causes(total.shuffle_errors))
    flood_table.add_row("node 0's rejected messages", _causes(f["victim_messages_rejected"]))
    flood_table.add_row("node 0's events", _causes(f["victim_events"]))
    flood_table.add_row(
        f"during phase B's queries ({window['seconds']:.1f} s): tasks served",
        f"{window['flooder_services']} of {window['sent']:.0f} sent "
        f"({window['proposals']:.0f} replies reached it)",
    )
    flood_table.add_row("  share of node 0's model", f"{window['model_share']:.3f}")
    flood_table.add_row("  share of node 0's services", f"{window['share_of_services']:.3f}")
    flood_table.add_row(
        "  fair share 1/n", f"{report['fair_share']:.3f} (node 0 counts n = {f['victim_devices']})"
    )
    console.print(flood_table)

    goals = report["goals"]
    ratio, share = goals["p50_ratio"], goals["flooder_share"]
    console.print(
        f"p50 latency ratio [bold]{ratio['value']:.2f}[/], target <= {ratio['target']}: "
        f"{_verdict(ratio['met'])}; flooder's model share [bold]{share['value']:.3f}[/], "
        f"target <= 1/n + {report['share_tolerance']} = {share['target']:.3f}: "
        f"{_verdict(share['met'])}"
    )
    if not report["fair_share_limiter"]:
        console.print("node 0 counts no task refusals: no fair-share limiter", style="yellow")
    if not report["accounting"]["adds_up"]:
        console.print(f"[red]the flooder's tasks do not add up: {report['accounting']}[/]")
    console.print(SHARE_MEANS, style="dim")
