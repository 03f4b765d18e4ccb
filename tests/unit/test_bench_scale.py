"""`bench scale` on small virtual swarms: its figures, its goals, its JSON and plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from dmoa_p2p.bench import ScaleResult, plot_scale, rows_from_json
from dmoa_p2p.bench._scale_virtual import VirtualScaleSettings, run_virtual_scale
from dmoa_p2p.cli import cli
from dmoa_p2p.logs import EVENTS


def test_a_virtual_swarm_under_churn_is_measured_per_node(caplog: pytest.LogCaptureFixture) -> None:
    # 30 nodes, 20 % a minute: a crash and a join every 10 s, three in the 40 s window
    settings = VirtualScaleSettings(nodes=30, warmup_s=10, window_s=40, churn_per_min=0.2)
    caplog.set_level(logging.INFO, logger=EVENTS)
    row = run_virtual_scale(settings)
    assert not [r for r in caplog.records if r.name == EVENTS]  # no node's joins on screen
    assert logging.getLogger(EVENTS).level == logging.INFO  # as it was
    assert row.kind == "virtual" and row.nodes == 30 and row.idle_cpu is None
    # a request and a reply per shuffle, a shuffle started and about one answered a round
    assert 6.0 <= row.messages_per_s <= 10.0
    assert row.bytes_sent_per_s > 1000 and row.bytes_received_per_s > 1000
    assert row.max_connections <= 8  # the target of 6 and two spare
    assert len(row.join_drawn_s) + row.joiners_never_drawn == 3
    assert row.join_drawn_s and max(row.join_drawn_s) <= 10.0
    assert len(row.crash_dropped_s) == 3 and max(row.crash_dropped_s) <= 9.0  # the TTL
    assert row.tv is not None and row.tv <= 0.15


def test_the_command_prints_json_with_goals_and_writes_a_plot(tmp_path: Path) -> None:
    plot = tmp_path / "scale.png"
    args = ["bench", "scale", "--real", "none", "--virtual", "12,24", "--virtual-window", "10"]
    result = CliRunner().invoke(cli, [*args, "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["nodes"] for row in report["rows"]] == [12, 24]
    ratio = report["goals"]["virtual_traffic_ratio"]
    assert 0.8 <= ratio["value"] <= 1.2 and ratio["met"] is True
    assert plot.stat().st_size > 10_000
    # a saved report is a baseline for the next one's plot
    rows = rows_from_json(report)
    assert ScaleResult(rows, {}).to_json()["rows"] == report["rows"]
    plot_scale(rows, rows, tmp_path / "again.png")
    assert (tmp_path / "again.png").exists()
