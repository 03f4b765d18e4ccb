"""`dmoa-p2p bench`: measure dmoa-p2p's layers against baselines on this machine."""

from __future__ import annotations

import click
from rich.table import Table

from dmoa_p2p.bench import BARE, BARE_MEANS, DMOA, OverlayBenchResult, run_overlay_bench
from dmoa_p2p.cli._bench_flood import flood
from dmoa_p2p.cli._bench_nat import nat
from dmoa_p2p.cli._bench_run import measure_and_report, stage_bar
from dmoa_p2p.cli._bench_scale import scale
from dmoa_p2p.cli._common import console, json_option

# (label, field, format): the rows of the overlay table, medians over rounds
_ROWS = (
    ("p50 latency (ms)", "p50_latency_ms", "{:.1f}"),
    ("p99 latency (ms)", "p99_latency_ms", "{:.1f}"),
    ("deliveries / s", "deliveries_per_s", "{:.0f}"),
    ("CPU per delivery (ms)", "cpu_ms_per_delivery", "{:.3f}"),
)
_LAYER_ROW = ("  of which variant code (ms)", "layer_cpu_ms_per_delivery", "{:.3f}")


@click.group()
def bench() -> None:
    """Measure dmoa-p2p against baselines on this machine."""


bench.add_command(flood)
bench.add_command(nat)
bench.add_command(scale)


@bench.command()
@click.option(
    "--nodes", type=click.IntRange(2, 32), default=5, show_default=True, help="Nodes in the swarm."
)
@click.option(
    "--messages",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Counted messages per variant, published round-robin from every node.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Uncounted messages per variant before measuring.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Blocks per variant, alternating bare and dmoa; metrics are medians over them.",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=None,
    help="Messages in flight (not yet at every receiver). [default: --nodes]",
)
@json_option
def overlay(
    nodes: int, messages: int, warmup: int, rounds: int, window: int | None, as_json: bool
) -> None:
    """Our signed-envelope layer against bare py-libp2p GossipSub, on one localhost swarm.

    All nodes run in this process on 127.0.0.1; CPU is this process's CPU time.
    """
    if rounds > messages:
        raise click.BadParameter(
            f"{rounds} rounds need at least {rounds} messages", param_hint="--rounds"
        )

    async def measure() -> OverlayBenchResult:
        with stage_bar(enabled=not as_json) as progress:
            return await run_overlay_bench(
                nodes, messages, warmup=warmup, rounds=rounds, window=window, progress=progress
            )

    measure_and_report(measure, as_json, _print_overlay)


def _print_overlay(result: OverlayBenchResult) -> None:
    s = result.settings
    bare, dmoa = result.summary(BARE), result.summary(DMOA)
    table = Table(
        title=f"overlay: {s.nodes} nodes, {s.messages} messages per variant, {s.rounds} rounds",
        caption=(
            f"medians over rounds (dmoa / bare: of the medians); window {s.window}, "
            f"payload {s.payload_bytes} bytes"
        ),
    )
    for column in ("", "bare", "dmoa", "dmoa / bare"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(
        "deliveries",
        f"{bare.deliveries}/{bare.expected_deliveries}",
        f"{dmoa.deliveries}/{dmoa.expected_deliveries}",
        "",
    )
    for label, field, fmt in _ROWS:
        b, d = bare.median(field), dmoa.median(field)
        table.add_row(label, fmt.format(b), fmt.format(d), f"{d / b:.3f}" if b else "-")
    label, field, fmt = _LAYER_ROW  # a ratio of near-zero to something says nothing
    table.add_row(label, fmt.format(bare.median(field)), fmt.format(dmoa.median(field)), "")
    console.print(table)
    ratios = result.round_ratios
    verdict = "[green]met[/]" if result.passed else "[red]not met[/]"
    console.print(
        f"CPU per delivery, dmoa/bare: [bold]{result.cpu_ratio:.4f}[/] (median of {len(ratios)} "
        f"back-to-back pairs, {min(ratios):.2f}-{max(ratios):.2f}); "
        f"target <= {result.target_ratio:.2f}: {verdict}"
    )
    extra = dmoa.median(_LAYER_ROW[1]) - bare.median(_LAYER_ROW[1])
    console.print(
        f"our layer's own code, timed inline: +{extra:.3f} ms per delivery, "
        f"a ratio of {result.cpu_ratio_from_layer_time:.3f} by itself",
        style="dim",
    )
    if not result.all_delivered:
        console.print("[red]some messages were not delivered[/]")
    console.print(BARE_MEANS, style="dim")
