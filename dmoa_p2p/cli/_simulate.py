"""`dmoa-p2p simulate`: λ sweeps of the real node code under Poisson load; the stability knee."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dmoa_p2p.cli._common import (
    check_plugin_name,
    console,
    json_option,
    parse_backend_options,
    positive_numbers,
    print_json,
    user_errors,
)
from dmoa_p2p.simulate import (
    DEFAULT_MULTIPLIERS,
    KNEE_MEANS,
    STRATEGIES,
    UNBOUNDED_QUEUE,
    RunConfig,
    Sweep,
    plot_sweep,
    run_sweep,
)

REAL_MULTIPLIERS = (0.5, 0.8, 0.9, 1.1, 1.2, 1.5)
ALPHA_S, REAL_ALPHA_S = 1.0, 0.05
DURATION_S, REAL_DURATION_S = 1000.0, 60.0
WARMUP_ALPHAS, ADMISSION_WARMUP_S = 50, 70.0  # warm-up: 50·α_max, at least 70 s with admission


def _span(values: tuple[float, ...]) -> str:
    return f"{values[0]:g} … {values[-1]:g}"


@click.command()
@click.option("--n", "n", type=click.IntRange(2), default=4, show_default=True, help="Devices.")
@click.option("--layers", "-M", type=click.IntRange(0), default=2, show_default=True)
@click.option("--proposers", "-k", type=click.IntRange(0), default=2, show_default=True)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, min_open=True),
    help="Mean (exponential) service time of each device, s. "
    f"[default: {ALPHA_S:g}; --real: {REAL_ALPHA_S:g}]",
)
@click.option(
    "--alpha-per-node",
    callback=positive_numbers,
    metavar="A1,A2,...",
    help="Unequal mean service times, one per device (overrides --n and --alpha).",
)
@click.option("--strategy", type=click.Choice(STRATEGIES), default="augmented", show_default=True)
@click.option(
    "--admission",
    default="none",
    show_default=True,
    help="Admission plugin: none, threshold, degrade, cap (or an installed one).",
)
@click.option(
    "--admission-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="An admission setting, e.g. rho_max=0.9 (repeatable).",
)
@click.option(
    "--multipliers",
    callback=positive_numbers,
    metavar="X1,X2,...",
    help="λ as multiples of the predicted threshold. "
    f"[default: {_span(DEFAULT_MULTIPLIERS)}; --real: {_span(REAL_MULTIPLIERS)}]",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    help=f"Measured seconds per point. [default: {DURATION_S:g}; --real: {REAL_DURATION_S:g}]",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    help=f"Unmeasured seconds first. [default: {WARMUP_ALPHAS}·α_max; "
    f"{ADMISSION_WARMUP_S:g} s or more with admission]",
)
@click.option(
    "--queue-capacity",
    type=click.IntRange(1),
    default=UNBOUNDED_QUEUE,
    show_default=True,
    help="Each node's queue capacity; large so that overload shows as growth.",
)
@click.option(
    "--presence-interval",
    type=click.FloatRange(0.1, 60.0),
    default=1.0,
    show_default=True,
    help="Seconds between presence messages.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the sweep plot (PNG) here.",
)
@click.option("--real", is_flag=True, help="Real py-libp2p nodes on 127.0.0.1, in real time.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Points run at once, one process each (not with --real).",
)
@click.option(
    "--checkpoint",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep each finished point in this directory; the same sweep run again takes "
    "those back and runs only the others (a stopped long sweep loses only its unfinished "
    "points).",
)
@json_option
def simulate(**options: Any) -> None:
    """Sweep λ around the stability threshold: the real node code, fake exponential models.

    Each point runs n nodes (queue, MoA engine, strategy, admission) whose users each send
    prompts as a Poisson process of rate λ. Without --real: the in-memory overlay under
    trio's MockClock (virtual time: thousands of prompts in seconds). With --real: py-libp2p
    on 127.0.0.1 in real time (hence a small α). λ is given in multiples of the predicted
    threshold: Theorem 1 for equal α's, Remark 1 (α_max) for unequal ones under uniform
    choice, the capacity-weighted bound for --strategy capacity.

    \b
    Per point: q = queue per node (waiting + in service), sampled every α_min/2;
    growth = mean queue in the last third of the run minus that in the first third;
    goodput = prompts answered per second per user, as a share of the threshold;
    ans/ref/deg/unf = answered, refused by admission, degraded, unfinished at the end.
    Every prompt ends as exactly one of answered, refused, failed or unfinished.

    \b
    Knee: each point's drift is the least-squares slope of the mean queue against
    time; drift = s·max(0, λ − knee) is fitted over all points (realised λ).
    Cross-check: the λ at which the busiest device's busy fraction, fitted as c·ρ(λ)
    over unsaturated points (ρ: the strategy's predicted utilisation), would reach 1.
    Predicted queue: M/M/1 per device with ρ from the per-device condition of the
    strategy (an approximation).
    """
    base, multipliers = _base_config(options)
    if options["real"] and options["jobs"] > 1:
        raise click.UsageError("--jobs runs virtual-time points only: real runs go one at a time")
    sweep = _run(
        base,
        multipliers,
        options["real"],
        options["jobs"],
        options["as_json"],
        options["checkpoint"],
    )
    plot: Path | None = options["plot"]
    if plot is not None:
        plot_sweep(sweep, plot)
    if options["as_json"]:
        print_json({**sweep.to_json(), "plot": str(plot) if plot else None})
        return
    _print(sweep)
    if plot is not None:
        console.print(f"plot written to {plot}")


def _base_config(options: dict[str, Any]) -> tuple[RunConfig, list[float]]:
    real: bool = options["real"]
    alpha = options["alpha"] or (REAL_ALPHA_S if real else ALPHA_S)
    alphas: list[float] = options["alpha_per_node"] or [alpha] * options["n"]
    if options["layers"] > 0 and options["proposers"] > len(alphas) - 1:
        raise click.BadParameter(
            f"k = {options['proposers']} proposers need at least {options['proposers'] + 1} devices"
        )
    admission: str = options["admission"]
    with user_errors():
        check_plugin_name("admission", admission)
    warmup: float | None = options["warmup"]
    if warmup is None:
        warmup = WARMUP_ALPHAS * max(alphas)
        if admission != "none":  # admission acts on measured service times and rates
            warmup = max(warmup, ADMISSION_WARMUP_S)
    base = RunConfig(
        alphas=tuple(alphas),
        layers=options["layers"],
        proposers=options["proposers"],
        rate=1.0,  # replaced per point
        duration_s=options["duration"] or (REAL_DURATION_S if real else DURATION_S),
        seed=options["seed"],
        strategy=options["strategy"],
        admission=admission,
        admission_options=parse_backend_options(options["admission_option"], "--admission-option"),
        warmup_s=warmup,
        queue_capacity=options["queue_capacity"],
        presence_interval_s=options["presence_interval"],
    )
    multipliers = options["multipliers"] or list(REAL_MULTIPLIERS if real else DEFAULT_MULTIPLIERS)
    return base, multipliers


def _run(
    base: RunConfig,
    multipliers: list[float],
    real: bool,
    jobs: int,
    quiet: bool,
    checkpoint: Path | None,
) -> Sweep:
    bar = Progress(
        TextColumn("λ sweep"),
        BarColumn(),
        TextColumn("{task.completed:.1f}/{task.total:.0f} points"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=quiet,
    )
    with bar, user_errors():
        task = bar.add_task("sweep", total=len(multipliers))
        return run_sweep(
            base,
            multipliers,
            real=real,
            jobs=jobs,
            progress=lambda done: bar.update(task, completed=done),
            checkpoint=checkpoint,
        )


def _print(sweep: Sweep) -> None:
    data = sweep.to_json()
    console.print(
        f"n={data['n']} M={data['layers']} k={data['proposers']} α={data['alphas_s']} "
        f"strategy {data['strategy']}, admission {data['admission']} ({data['mode']})"
    )
    console.print(
        f"predicted threshold λ* = {data['threshold_rate']:.4g} /s per user "
        f"(Theorem 1 with mean α: {data['theorem1_rate']:.4g})"
    )
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption="q: queue per node (waiting + in service); lat: query latency (s); "
        "ans/ref/deg/unf: answered, refused, degraded (of answered), unfinished at the end; "
        "conn: connections per node, median/max",
    )
    for col in (
        "×λ*", "λ /s", "ρ", "q mean", "q p99", "q M/M/1", "growth", "lat mean/p99",
        "ans/ref/deg/unf", "goodput", "conn",
    ):  # fmt: skip
        table.add_column(col, justify="right", no_wrap=True)
    for p in data["points"]:
        table.add_row(*_row(p))
    # piped output is 80 columns by default: too narrow for the table, so widen it there
    (console if console.is_terminal else Console(width=130)).print(table)
    knee = data["knee_rate"]
    if knee is None:
        console.print("knee: no point had growing queues (all stable)")
    else:
        console.print(
            f"knee λ = {knee:.4g} /s = {data['knee_over_threshold']:.3f} × threshold; "
            f"busy-fraction cross-check {_ratio(data['busy_knee_over_threshold'])}"
        )
        if data["drawn_threshold_rate"] is not None:
            drawn = data["drawn_threshold_rate"]
            console.print(
                f"with the proposers as drawn the busiest device saturates at λ = {drawn:.4g} /s "
                f"({drawn / data['threshold_rate']:.3f} × threshold): "
                f"the knee is {data['knee_over_drawn_threshold']:.3f} × that"
            )
        if not data["knee_well_placed"]:
            below, above = data["knee_points_below_above"]
            console.print(
                f"[yellow]the knee rests on {below} point(s) below and {above} above it; "
                "add multipliers on both sides for a firm figure[/]"
            )
    console.print(f"note: {KNEE_MEANS}", style="dim")
    console.print(f"note: {data['prediction_means']}", style="dim")
    if not all(p["books_balance"] for p in data["points"]):
        console.print("[red]books do not balance: some prompt is unaccounted for[/]")


def _row(p: dict[str, Any]) -> list[str]:
    q, lat, books, conn = p["queue"], p["latency_s"], p["books"], p["connections"]
    rho = f"{p['rho']:.2f}" if p["rho"] < 1 else f"[red]{p['rho']:.2f}[/]"
    fates = (books["answered"], books["refused"], books["degraded"], books["unfinished"])
    return [
        f"{p['multiplier']:.2f}",
        f"{p['realised_rate']:.3g}",
        rho,
        f"{q['mean']:.2f}",
        f"{q['p99']:.0f}",
        "∞" if p["predicted_mean_queue"] is None else f"{p['predicted_mean_queue']:.2f}",
        f"{q['growth']:+.1f}",
        f"{_opt(lat['mean'])}/{_opt(lat['p99'])}",
        "/".join(str(x) for x in fates),
        f"{100 * p['goodput_fraction']:.0f}%",
        f"{_opt(conn['median'], 0)}/{_opt(conn['max'], 0)}",
    ]


def _opt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} × threshold"
