"""`bench flood` on a small real swarm: its report's shape, and that the flooder's tasks add up.

Timing goals are the benchmark's business (BENCHMARKS.md), not these tests'.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from dmoa_p2p.bench import FloodCounts, FloodLimits, FloodSettings, run_flood_bench
from dmoa_p2p.cli import cli

pytestmark = pytest.mark.integration

SERVICE_S = 0.05
LIMITS = FloodLimits(max_tasks=400, max_shuffles=100, max_s=30.0, drain_s=10.0)


def check_counts(counts: FloodCounts, limits: FloodLimits) -> None:
    assert counts.sent == (
        counts.proposals + counts.refusals + counts.unacknowledged + counts.unanswered
    )
    assert counts.sending == 0  # the flood waits for its last sends before it stops
    assert 0 < counts.sent <= limits.max_tasks
    assert sum(counts.refusal_reasons.values()) == counts.refusals
    assert sum(counts.ack_errors.values()) >= counts.unacknowledged
    assert counts.served_s >= 0.9 * SERVICE_S * counts.proposals
    # its record reached the victim, and shuffles beyond the victim's pace were refused
    assert counts.shuffles_delivered > 0
    paced = [n for why, n in counts.shuffle_errors.items() if why.endswith("too_frequent")]
    assert sum(paced) > 0, counts.shuffle_errors
    assert counts.stopped_by in ("phase end", "max_tasks")


def check_report(report: dict[str, Any], queries: int) -> None:
    assert set(report["phases"]) == {"no_flood", "flood"}
    for phase in report["phases"].values():
        assert phase["answered"] + sum(phase["refused"].values()) == queries
        latency = phase["latency_s"]
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["max"]
        assert phase["victim_services"] >= phase["answered"]  # one aggregation each, at least
    ratio = report["latency_ratio"]["p50"]
    p50s = [report["phases"][name]["latency_s"]["p50"] for name in ("flood", "no_flood")]
    assert ratio == pytest.approx(p50s[0] / p50s[1])

    accounting = report["accounting"]
    assert accounting["adds_up"] and accounting["sent"] == accounting["accounted"]
    flooder = report["flooder"]
    total, window = flooder["total"], flooder["window"]
    assert accounting["sent"] == total["sent"]
    for key in ("sent", "proposals", "refusals", "unacknowledged"):
        assert 0 <= window[key] <= total[key]
    assert report["phases"]["no_flood"]["flooder_services"] == 0
    assert window["flooder_services"] == report["phases"]["flood"]["flooder_services"]
    assert 0 <= window["flooder_services"] <= window["victim_services"]
    assert 0 <= window["model_share"] <= 1 and 0 <= window["model_share_seen_by_flooder"] <= 1
    assert report["fair_share"] == pytest.approx(1 / report["settings"]["nodes"])
    goals = report["goals"]
    assert goals["p50_ratio"]["met"] == (ratio <= goals["p50_ratio"]["target"])
    share = goals["flooder_share"]
    assert share["value"] == window["model_share"]
    assert share["target"] == pytest.approx(report["fair_share"] + report["share_tolerance"])
    assert report["passed"] == (goals["p50_ratio"]["met"] and share["met"])
    # the victim refused the flood's shuffles beyond its pace, unread
    assert flooder["victim_refusals"].get("shuffle_too_frequent", 0) > 0, flooder["victim_refusals"]
    if report["fair_share_limiter"]:
        # the victim counts every refusal it made; the flooder those whose reply reached it
        assert sum(flooder["victim_task_refusals"].values()) >= total["refusals"]
    json.dumps(report, allow_nan=False)


async def test_in_process_flooder_is_accounted_for() -> None:
    settings = FloodSettings(
        nodes=3,
        service_time_s=SERVICE_S,
        queries=3,
        flood_warmup_s=0.5,
        flooder="in-process",
        limits=LIMITS,
    )
    result = await run_flood_bench(settings)
    check_counts(result.total, LIMITS)
    assert result.total.flood_s > 0
    for earlier, later in (
        (result.window_start, result.window_end),
        (result.window_end, result.total),
    ):
        assert all(gain >= 0 for gain in later.minus(earlier).values())
    check_report(result.to_json(), queries=3)


def test_cli_prints_one_json_object_with_a_flooder_process() -> None:
    args = ["bench", "flood", "--nodes", "3", "--service-time", str(SERVICE_S)]
    args += ["--queries", "2", "--flood-warmup", "0.5", "--max-tasks", "300"]
    outcome = CliRunner().invoke(cli, [*args, "--max-shuffles", "100", "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout)
    check_report(report, queries=2)
    assert report["settings"]["flooder"] == "process"
    assert report["settings"]["limits"]["max_tasks"] == 300
    check_counts(FloodCounts.from_json(report["flooder"]["total"]), FloodLimits(max_tasks=300))
