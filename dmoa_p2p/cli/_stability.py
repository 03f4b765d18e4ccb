"""`dmoa-p2p stability`: the queue-stability calculator (thresholds and predictions)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from dmoa_p2p import stability as st
from dmoa_p2p.cli._common import console, json_option, positive_numbers, print_json


@click.command()
@click.option(
    "--n",
    "n",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Devices (users) in the swarm.",
)
@click.option("--layers", "-M", type=click.IntRange(0), default=2, show_default=True)
@click.option("--proposers", "-k", type=click.IntRange(0), default=2, show_default=True)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Mean inference time α of every device, seconds.",
)
@click.option(
    "--alpha-per-node",
    callback=positive_numbers,
    metavar="A1,A2,...",
    help="Unequal inference times, one per device (overrides --n and --alpha).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=None,
    help="Per-user prompt rate λ for the predictions. [default: 0.8 × the threshold]",
)
@click.option(
    "--service-var",
    type=click.FloatRange(min=0),
    default=None,
    help="Service-time variance for M/G/1. [default: α² (exponential)]",
)
@json_option
def stability(
    n: int,
    layers: int,
    proposers: int,
    alpha: float,
    alpha_per_node: list[float] | None,
    rate: float | None,
    service_var: float | None,
    as_json: bool,
) -> None:
    """Thresholds of Theorem 1 and Remark 1, per-device conditions, queue predictions.

    Per-user λ everywhere. Capacity rows assume proposers are drawn in proportion to spare
    capacity 1/α_i − λ·(M+1) (floored), as the `capacity` strategy does.
    """
    alphas = alpha_per_node or [alpha] * n
    n = len(alphas)
    if proposers > n - 1 and layers > 0:
        raise click.BadParameter(f"k = {proposers} proposers need at least {proposers + 1} devices")
    result = analyse(alphas, layers, proposers, rate, service_var)
    if as_json:
        print_json(result)
    else:
        _print(result)


def analyse(
    alphas: list[float], layers: int, proposers: int, rate: float | None, var: float | None
) -> dict[str, Any]:
    """Everything the command prints, as JSON-able data."""
    n = len(alphas)
    ones = [1.0] * n
    uniform_max = st.max_stable_scale(ones, alphas, layers, proposers)
    weighted_max = st.max_stable_scale(ones, alphas, layers, proposers, "capacity")
    lam = 0.8 * uniform_max if rate is None else rate
    uniform = st.uniform_arrival_rates([lam] * n, layers, proposers)
    weighted = st.inference_arrival_rates([lam] * n, alphas, layers, proposers, "capacity")
    devices: list[dict[str, Any]] = []
    for i, a in enumerate(alphas):
        mm1 = st.mm1(a, uniform[i])
        mg1 = st.mg1(a, a * a if var is None else var, uniform[i])
        devices.append(
            {
                "device": i,
                "alpha_s": a,
                "uniform": {"arrival_rate": uniform[i], "rho": uniform[i] * a},
                "capacity_weighted": {"arrival_rate": weighted[i], "rho": weighted[i] * a},
                "mm1_mean_queue": mm1.mean_in_system,
                "mg1_mean_queue": mg1.mean_in_system,
                "mg1_mean_sojourn_s": mg1.mean_sojourn_s,
            }
        )
    return {
        "n": n,
        "layers": layers,
        "proposers": proposers,
        "alphas_s": alphas,
        "inferences_per_prompt": st.inferences_per_prompt(layers, proposers),
        "theorem1_max_rate": st.max_stable_rate(sum(alphas) / n, layers, proposers),
        "remark1_max_rate": st.remark1_max_rate(alphas, layers, proposers),
        "uniform_max_rate": uniform_max,
        "capacity_weighted_max_rate": weighted_max,
        "capacity_gain": weighted_max / uniform_max,
        "rate": lam,
        "devices": devices,
        "query_latency_estimate_s": max(
            st.query_latency_estimate(d["mg1_mean_sojourn_s"], layers) for d in devices
        ),
        "notes": [
            "theorem1_max_rate uses the mean α; with unequal α's remark1 (α_max) is the bound "
            "under uniform choice and equals uniform_max_rate",
            "thresholds are exact mean-rate conditions; queue and latency figures are M/M/1 "
            "and M/G/1 approximations (arrivals at a device are not Poisson)",
            f"capacity: proposers drawn in proportion to spare capacity max({st.SPARE_FLOOR}/α_i, "
            "1/α_i − λ·(M+1)) by systematic sampling; its threshold is found by bisection",
        ],
    }


def _print(r: dict[str, Any]) -> None:
    console.print(
        f"n={r['n']} M={r['layers']} k={r['proposers']}: "
        f"{r['inferences_per_prompt']} inferences per prompt"
    )
    console.print(f"Theorem 1 (mean α): stable while λ < {r['theorem1_max_rate']:.4g} /s per user")
    console.print(f"Remark 1 (α_max):   stable while λ < {r['remark1_max_rate']:.4g} /s per user")
    console.print(
        f"capacity (spare) choice: λ < {r['capacity_weighted_max_rate']:.4g} /s "
        f"({r['capacity_gain']:.2f}× the uniform bound)"
    )
    table = Table(title=f"at λ = {r['rate']:.4g} /s per user")
    for col in ("device", "α s", "ρ uniform", "ρ capacity", "E[N] M/M/1", "E[N] M/G/1"):
        table.add_column(col, justify="right")
    for d in r["devices"]:
        table.add_row(
            str(d["device"]),
            f"{d['alpha_s']:.3g}",
            _rho(d["uniform"]["rho"]),
            _rho(d["capacity_weighted"]["rho"]),
            f"{d['mm1_mean_queue']:.3g}",
            f"{d['mg1_mean_queue']:.3g}",
        )
    console.print(table)
    console.print(
        f"query latency estimate (M/G/1, no network): {r['query_latency_estimate_s']:.3g} s"
    )
    for note in r["notes"]:
        console.print(f"note: {note}", style="dim")


def _rho(rho: float) -> str:
    return f"{rho:.3f}" if rho < 1 else f"[red]{rho:.3f}[/]"
