"""The simulator: real nodes under Poisson load in virtual time, its figures and the knee fit."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

from dmoa_p2p.cli import cli
from dmoa_p2p.simulate import RunConfig, RunResult, predicted_mean_queue, predicted_threshold
from dmoa_p2p.simulate import simulate as run
from dmoa_p2p.simulate._metrics import books_balance, percentile, slope
from dmoa_p2p.simulate._model import device_utilisations, saturation_rate
from dmoa_p2p.simulate._sweep import Sweep, hinge_fit, point_config, run_sweep

# n=3, M=1, k=1: 3 inferences per prompt, α = 1 s, so λ* = 1/3 per user; cheap to simulate
BASE = RunConfig(alphas=(1.0, 1.0, 1.0), layers=1, proposers=1, rate=1.0, duration_s=200)
THRESHOLD = 1.0 / 3.0


def at(multiplier: float, **changes: Any) -> RunConfig:
    return attrs.evolve(BASE, rate=multiplier * THRESHOLD, **changes)


def assert_books(result: RunResult) -> None:
    data = result.to_json()
    b = data["books"]
    assert b["arrivals"] == b["answered"] + b["refused"] + b["failed"] + b["unfinished"]
    assert data["books_balance"], data
    assert books_balance(result.raw)


@pytest.mark.integration  # seconds of CPU: a long virtual run, not a unit
def test_same_seed_same_run_other_seed_other_run() -> None:
    config = at(0.8, duration_s=150, warmup_s=20, strategy="capacity")
    first, second = run(config), run(config)
    assert first.raw.samples == second.raw.samples
    assert [(a.at, a.ended, a.outcome) for a in first.raw.arrivals] == [
        (a.at, a.ended, a.outcome) for a in second.raw.arrivals
    ]
    assert first.raw.busy_s == second.raw.busy_s
    other = run(attrs.evolve(config, seed=2))
    assert [a.at for a in other.raw.arrivals] != [a.at for a in first.raw.arrivals]
    assert_books(first)


@pytest.mark.integration  # seconds of CPU: a long virtual run, not a unit
def test_below_threshold_the_mean_queue_is_near_mm1() -> None:
    # M/M/1 at ρ = 0.8 predicts E[N] = 4 per device. The time average over 800 service
    # times has a relative standard deviation of about 35% per device (asymptotic variance
    # 2ρ(1+ρ)/(1−ρ)⁴ per unit time), about 20% over three devices, and arrivals at a device
    # are not Poisson: a band of ±50% is wide enough to be robust and narrow enough to catch
    # a queue that is off by a factor (e.g. inferences lost or counted twice).
    result = run(at(0.8, duration_s=800, warmup_s=50))
    predicted = predicted_mean_queue(result.config)
    assert predicted == pytest.approx(4.0)
    assert 0.5 * predicted < result.queue.mean < 1.5 * predicted
    assert result.to_json()["books"]["unfinished"] == 0
    assert max(result.busy) < 0.95
    assert_books(result)


@pytest.mark.integration  # seconds of CPU: a long virtual run, not a unit
def test_above_threshold_without_admission_the_queue_grows_with_run_length() -> None:
    short = run(at(1.2, duration_s=150, warmup_s=30))
    long = run(at(1.2, duration_s=450, warmup_s=30))
    assert short.queue.growth > 5
    assert long.queue.growth > 2 * short.queue.growth
    assert long.queue.mean > 2 * short.queue.mean
    assert long.queue.drift_per_s > 0.05  # prompts per second per node, steadily
    assert_books(short)
    assert_books(long)


@pytest.mark.integration  # seconds of CPU: a long virtual run, not a unit
@pytest.mark.parametrize("policy", ["threshold", "degrade"])
def test_above_threshold_admission_keeps_the_queue_bounded(policy: str) -> None:
    # at ρ_max = 0.9 a queue relaxes over hundreds of service times: a 300 s warm-up lets it
    # settle, so growth over the window means instability, not filling
    results = [
        run(at(1.2, duration_s=d, warmup_s=300, admission=policy)) for d in (300, 900)
    ]
    for result in results:
        assert result.queue.growth < 4.0  # not growing (one that drains is bounded too)
        assert result.queue.drift_per_s < 0.005  # without admission: above 0.05
        assert result.queue.mean < 10.0
        # the busiest device is held at ρ_max = 0.9, so the swarm does about that much work
        assert 0.85 < result.to_json()["utilisation"] < 0.95
        assert_books(result)
    short, long = results
    assert long.queue.mean < 1.5 * short.queue.mean + 1
    data = long.to_json()
    if policy == "threshold":
        assert data["books"]["refused"] > 0  # refused, counted and reported
        assert data["measured_refused"] > 0
    else:
        assert data["books"]["degraded"] > 0
        assert data["books"]["answered"] == data["books"]["arrivals"]


def test_refused_prompts_are_reported_not_dropped() -> None:
    result = run(
        at(1.5, duration_s=150, warmup_s=70, admission="cap", admission_options={"cap": "1"})
    )
    data = result.to_json()
    assert data["books"]["refused"] > 0
    assert data["books"]["refused"] == result.raw.node_outcomes["refused"]
    assert_books(result)


def test_predicted_threshold_follows_the_strategy() -> None:
    assert predicted_threshold(BASE) == pytest.approx(THRESHOLD)
    slow = RunConfig((1, 1, 1, 1, 4, 4, 4, 4), 2, 2, 0.01, 10)
    assert predicted_threshold(slow) == pytest.approx(1 / (4 * 7))  # Remark 1
    capacity = attrs.evolve(slow, strategy="capacity")
    ratio = predicted_threshold(capacity) / (1 / 28)
    assert ratio == pytest.approx(2.233, abs=0.001)  # spare-capacity choice
    # its weights depend on λ, so ρ is not linear in λ: at 0.8 × the threshold the slow
    # devices are at 0.91, not 0.8
    rhos = device_utilisations(attrs.evolve(capacity, rate=0.8 * predicted_threshold(capacity)))
    assert max(rhos) == pytest.approx(0.908, abs=0.001)
    assert math.isinf(predicted_mean_queue(at(1.0)))
    assert math.isinf(predicted_mean_queue(capacity, predicted_threshold(capacity)))


def test_saturation_rate_follows_the_predicted_utilisation() -> None:
    # busy fractions exactly as predicted: busy all the time at the predicted threshold
    slow = RunConfig((1, 1, 1, 1, 4, 4, 4, 4), 2, 2, 0.01, 10)
    for config in (BASE, slow, attrs.evolve(slow, strategy="capacity")):
        assert saturation_rate(config, [1.0] * config.n) == pytest.approx(
            predicted_threshold(config), rel=1e-9
        )
    # uniform choice: ρ is linear in λ, so twice as busy saturates at half the rate
    assert saturation_rate(BASE, [2.0, 1.0, 1.0]) == pytest.approx(THRESHOLD / 2)
    assert math.isinf(saturation_rate(BASE, [0.0] * 3))


def test_sweep_points_have_their_own_seeds_and_rates() -> None:
    a, b = point_config(BASE, 0.5, 0), point_config(BASE, 0.5, 1)
    assert a.seed != b.seed
    assert a.rate == pytest.approx(0.5 * THRESHOLD)
    assert point_config(BASE, 0.5, 0) == a


def test_hinge_fit_finds_the_corner() -> None:
    xs = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    ys = [0.0, 0.0, 0.0, 0.05, 0.15, 0.25]
    fit = hinge_fit(xs, ys)
    assert fit is not None
    knee, s = fit
    assert knee == pytest.approx(0.35, abs=0.01)
    assert s == pytest.approx(1.0, rel=0.05)
    assert hinge_fit(xs, [0.0] * 6) is None


def test_percentile_and_slope() -> None:
    assert percentile([3, 1, 2, 4], 0.5) == 2
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert math.isnan(percentile([], 0.5))
    assert slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0)
    assert slope([1], [1]) == 0.0


def test_cli_prints_json_and_writes_the_plot(tmp_path: Path) -> None:
    plot = tmp_path / "sweep.png"
    args = ["simulate", "--n", "3", "-M", "1", "-k", "1", "--duration", "60", "--warmup", "10"]
    args += ["--multipliers", "0.5,1.5", "--plot", str(plot), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stderr may carry log lines
    assert [round(p["multiplier"], 2) for p in data["points"]] == [0.5, 1.5]
    assert all(p["books_balance"] for p in data["points"])
    assert data["threshold_rate"] == pytest.approx(THRESHOLD)
    assert plot.stat().st_size > 10_000


def test_cli_table_and_bad_k() -> None:
    args = ["simulate", "--n", "3", "-M", "1", "-k", "1", "--duration", "30", "--warmup", "5"]
    result = CliRunner().invoke(cli, [*args, "--multipliers", "0.5"])
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output and "ans/ref/deg/unf" in result.output
    bad = CliRunner().invoke(cli, ["simulate", "--n", "2", "-k", "2"])
    assert bad.exit_code != 0
    assert "proposers need" in bad.output


def test_with_every_peer_a_candidate_the_drawn_prediction_is_theorem_1() -> None:
    # n = 3: every node's candidates are the two others, so the draws are uniform choice
    result = run(at(0.5, duration_s=60, warmup_s=20))
    assert result.drawn_threshold == pytest.approx(THRESHOLD)
    assert result.to_json()["connections"]["max"] == 2


@pytest.mark.integration  # spawns two Python processes: seconds, not a unit
def test_points_run_in_processes_are_the_points_run_one_after_another() -> None:
    base = attrs.evolve(BASE, duration_s=40, warmup_s=10)
    alone = run_sweep(base, [0.5, 1.2])
    done: list[float] = []
    together = run_sweep(base, [0.5, 1.2], jobs=2, progress=done.append)
    assert [r.raw.samples for r in together.results] == [r.raw.samples for r in alone.results]
    assert [r.config for r in together.results] == [r.config for r in alone.results]
    assert done == [1, 2]


def test_jobs_are_refused_for_real_runs() -> None:
    with pytest.raises(ValueError, match="one at a time"):
        run_sweep(BASE, [0.5, 1.2], real=True, jobs=2)
    result = CliRunner().invoke(cli, ["simulate", "--real", "--jobs", "2"])
    assert result.exit_code != 0
    assert "--jobs runs virtual-time points only" in result.output


def test_a_checkpointed_sweep_takes_back_its_finished_points(tmp_path: Path) -> None:
    """A sweep stopped after its first point (here: run with that point alone) runs only
    the second when run again, and gives what one uninterrupted sweep gives."""
    base = attrs.evolve(BASE, duration_s=40, warmup_s=10)
    whole = run_sweep(base, [0.5, 1.2])
    first = run_sweep(base, [0.5], checkpoint=tmp_path)
    assert len(list(tmp_path.glob("point-*.json"))) == 1
    done: list[float] = []
    resumed = run_sweep(base, [0.5, 1.2], checkpoint=tmp_path, progress=done.append)
    assert resumed.results[0].raw == first.results[0].raw  # read back, not run again
    assert [r.raw.samples for r in resumed.results] == [r.raw.samples for r in whole.results]
    assert without_wall_time(resumed) == without_wall_time(whole)
    assert done[0] == 1 and done[-1] == 2
    # a damaged point file is run again, not believed
    for path in tmp_path.glob("point-*.json"):
        path.write_text("{broken")
    again = run_sweep(base, [0.5], checkpoint=tmp_path)
    assert without_wall_time(again)[0] == without_wall_time(whole)[0]


def without_wall_time(sweep: Sweep) -> list[dict[str, Any]]:
    """The points' figures but their wall time, which no two runs share."""
    points = sweep.to_json()["points"]
    return [{k: v for k, v in point.items() if k != "wall_s"} for point in points]
