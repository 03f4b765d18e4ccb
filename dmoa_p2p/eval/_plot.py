"""The evaluation plot: accuracy against median latency, one point per configuration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from dmoa_p2p.eval._report import Row


def _marker(configuration: str) -> str:
    """A star for the one model, squares for Self-MoA, dots for MoA over the swarm."""
    if configuration == "one":
        return "*"
    return "s" if configuration.startswith("self-") else "o"


def plot_rows(rows: Sequence[Row], path: Path, title: str) -> None:
    """One panel per set: accuracy (Wilson 95 % bars) against p50 latency (log scale)."""
    sets = list(dict.fromkeys(r.set for r in rows))
    fig, axes = plt.subplots(
        1, len(sets), figsize=(5.2 * len(sets), 4.6), dpi=120, squeeze=False, sharey=True
    )
    for ax, set_name in zip(axes[0], sets, strict=True):
        for row in (r for r in rows if r.set == set_name):
            marker = _marker(row.configuration)
            ax.errorbar(
                max(row.latency_p50_s, 1e-3),
                row.accuracy,
                yerr=[[row.accuracy - row.low], [row.high - row.accuracy]],
                fmt=marker,
                markersize=9 if marker == "*" else 5,
                capsize=2,
                label=row.configuration,
            )
        ax.set_xscale("log")
        seconds = FuncFormatter(lambda value, _pos: f"{value:g}")  # 2, not 2×10⁰
        ax.xaxis.set_major_formatter(seconds)
        ax.xaxis.set_minor_formatter(seconds)
        ax.set_xlabel("median latency per answer, s")
        ax.set_title(set_name)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (95 % Wilson interval)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
