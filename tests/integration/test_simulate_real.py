"""A short `simulate --real` sweep: real py-libp2p nodes on 127.0.0.1, books balanced."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dmoa_p2p.cli import cli
from dmoa_p2p.simulate import RunConfig
from dmoa_p2p.simulate._sweep import run_sweep

pytestmark = pytest.mark.integration


def test_a_short_real_sweep_accounts_for_every_prompt() -> None:
    # n=3, M=1, k=1, α=50 ms: λ* = 1/(0.05·3) ≈ 6.7 prompts/s per user
    base = RunConfig(
        alphas=(0.05, 0.05, 0.05),
        layers=1,
        proposers=1,
        rate=1.0,
        duration_s=4.0,
        warmup_s=1.0,
        drain_s=3.0,
    )
    sweep = run_sweep(base, [0.5, 1.3], real=True)
    low, high = sweep.results
    for result in sweep.results:
        data = result.to_json()
        assert data["mode"] == "real"
        assert data["books_balance"], data
        assert data["books"]["failed"] == 0
        assert data["measured_arrivals"] > 0
    assert low.to_json()["books"]["answered"] > 0
    assert max(low.busy) < 0.9  # half the threshold leaves every device idle often
    assert high.queue.mean > low.queue.mean


def test_the_cli_runs_real() -> None:
    args = ["simulate", "--real", "--n", "3", "-M", "1", "-k", "1", "--duration", "3"]
    args += ["--warmup", "1", "--multipliers", "0.5", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stderr may carry log lines
    assert data["mode"] == "real"
    assert data["points"][0]["books_balance"]
