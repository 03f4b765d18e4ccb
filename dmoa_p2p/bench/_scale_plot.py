"""`bench scale`'s plot: per-node cost against the swarm's size, this design beside the old one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from dmoa_p2p.bench._scale_results import ScaleRow

# the old design: every node publishes its presence every 2 s and GossipSub brings every
# other node's to it, over a connection to every peer
OLD_PRESENCE_INTERVAL_S = 2.0


def _series(
    ax: Axes,
    rows: Sequence[ScaleRow],
    value: Callable[[ScaleRow], float | None],
    label: str,
    marker: str,
) -> None:
    points = sorted((r.nodes, v) for r in rows if (v := value(r)) is not None)
    if points:
        ax.plot([n for n, _ in points], [v for _, v in points], marker=marker, label=label)


def plot_scale(rows: Sequence[ScaleRow], baseline: Sequence[ScaleRow], path: Path) -> None:
    """Write the PNG: messages/s, bytes/s, connections and idle CPU per node against n."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), dpi=120)
    panels: list[tuple[Axes, str, Callable[[ScaleRow], float | None]]] = [
        (axes[0][0], "control messages / s per node", lambda r: r.messages_per_s),
        (axes[0][1], "control bytes / s per node", lambda r: r.control_bytes_per_s or None),
        (axes[1][0], "connections per node", lambda r: r.connections),
        (axes[1][1], "idle CPU per node (cores)", lambda r: r.idle_cpu),
    ]
    sizes = sorted({r.nodes for r in (*rows, *baseline)})
    for ax, title, value in panels:
        _series(ax, [r for r in rows if r.kind == "real"], value, "peer sampling, real", "o")
        _series(ax, [r for r in rows if r.kind == "virtual"], value, "peer sampling, virtual", "s")
        _series(ax, baseline, value, "all-to-all presence, real", "^")
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log")
        ax.set_xlabel("nodes")
        ax.grid(True, alpha=0.3)
    if sizes:
        # what all-to-all presence needs by construction: n − 1 presences every 2 s in, and
        # a connection to every peer
        axes[0][0].plot(
            sizes,
            [(n - 1) / OLD_PRESENCE_INTERVAL_S for n in sizes],
            linestyle="--",
            color="grey",
            label="all-to-all presence, (n−1)/2 s",
        )
        axes[1][0].plot(
            sizes, [n - 1 for n in sizes], linestyle="--", color="grey", label="all-to-all, n−1"
        )
    for ax in (axes[0][0], axes[1][0]):
        ax.set_yscale("log")
    for ax in (axes[0][1], axes[1][1]):
        ax.set_ylim(bottom=0)  # from zero: a flat cost must not look like a steep one
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle("Per-node cost against the swarm's size (idle swarms, fake backend)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
