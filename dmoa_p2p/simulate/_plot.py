"""The sweep plot: measured mean queue against λ, the thresholds, the M/M/1 prediction."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from dmoa_p2p import stability as st
from dmoa_p2p.simulate._sweep import Sweep, prediction_curve


def _title(sweep: Sweep) -> str:
    base = sweep.base
    alphas = sorted(set(base.alphas))
    alpha = (
        f"α={alphas[0]:g} s" if len(alphas) == 1 else "α=" + ",".join(f"{a:g}" for a in base.alphas)
    )
    mode = "localhost libp2p" if sweep.real else "in-memory overlay, virtual time"
    return (
        f"n={base.n}, M={base.layers}, k={base.proposers}, {alpha}, {base.strategy}, "
        f"admission {base.admission}\n{mode}, {base.duration_s:g} s measured per point"
    )


def plot_sweep(sweep: Sweep, path: Path) -> None:
    """Write the PNG: mean queue (log) and queue drift against per-user λ, with thresholds."""
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 7.5), dpi=120, sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    _queues(top, sweep)
    _drift(bottom, sweep)
    for ax in (top, bottom):
        _thresholds(ax, sweep)
        ax.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=8, loc="lower right")
    bottom.legend(fontsize=8, loc="upper left")
    top.set_title(_title(sweep), fontsize=9)
    bottom.set_xlabel("λ, prompts per second per user (realised)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _queues(ax: Axes, sweep: Sweep) -> None:
    rates = [r.realised_rate for r in sweep.results]
    means = [r.queue.mean for r in sweep.results]
    ax.plot(rates, means, "o-", label="measured mean queue")
    ax.plot(
        rates,
        [r.queue.max_node_mean for r in sweep.results],
        "s--",
        alpha=0.6,
        label="measured, busiest node's mean",
    )
    positive = [m for m in means if m > 0]
    floor = min(positive) / 2 if positive else 0.01
    ceiling = 2 * max(means) if means else math.inf  # the curve diverges at the threshold
    curve = [(x, y) for x, y in prediction_curve(sweep.base) if floor <= y <= ceiling]
    ax.plot(
        [x for x, _ in curve],
        [y for _, y in curve],
        "-",
        color="grey",
        label="M/M/1 per device, mean over devices (approximate)",
    )
    ax.set_yscale("log")
    ax.set_ylabel("queue length (waiting + in service)")


def _drift(ax: Axes, sweep: Sweep) -> None:
    rates = [r.realised_rate for r in sweep.results]
    ax.plot(rates, [r.queue.drift_per_s for r in sweep.results], "o", label="measured drift")
    knee = sweep.knee()
    if knee.rate is not None:
        xs = [min(rates), knee.rate, max(rates)]
        ax.plot(
            xs,
            [knee.drift_slope * max(0.0, x - knee.rate) for x in xs],
            "-",
            color="black",
            alpha=0.6,
            label="hinge fit",
        )
    ax.set_ylabel("queue drift, prompts/s per node")


def _thresholds(ax: Axes, sweep: Sweep) -> None:
    base = sweep.base
    mean_alpha = sum(base.alphas) / base.n
    ax.axvline(
        st.max_stable_rate(mean_alpha, base.layers, base.proposers),
        color="red",
        label="Theorem 1 threshold (mean α)",
    )
    if len(set(base.alphas)) > 1:
        ax.axvline(
            st.remark1_max_rate(list(base.alphas), base.layers, base.proposers),
            color="darkorange",
            linestyle="-.",
            label="Remark 1 threshold (α_max)",
        )
    if base.strategy == "capacity":
        ax.axvline(sweep.threshold, color="purple", linestyle="-.", label="capacity-weighted")
    knee = sweep.knee().rate
    if knee is not None and math.isfinite(knee):
        ax.axvline(knee, color="black", linestyle=":", label="measured knee")
