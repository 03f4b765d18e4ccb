"""`dmoa_p2p.eval` against real nodes' HTTP APIs: every configuration answers, reruns resume."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from click.testing import CliRunner

from dmoa_p2p.cli import cli
from dmoa_p2p.eval import (
    EvalSettings,
    ResultsFile,
    Target,
    arithmetic_items,
    parse_configurations,
    run_eval,
    summarise,
    write_alpaca_outputs,
)
from dmoa_p2p.swarm import open_inprocess_swarm

pytestmark = pytest.mark.integration
FAKE = {"backend": "fake", "backend_options": {"service_time": "0.02"}}


async def test_every_configuration_answers_every_item_and_a_rerun_resumes(tmp_path: Path) -> None:
    items = arithmetic_items(1, 6)
    configurations = parse_configurations("m1k2-augmented-vote,m1k1-raw-moa,self-k1-moa")
    settings = EvalSettings(seed=5, concurrency=2)
    path = tmp_path / "results.jsonl"
    async with open_inprocess_swarm(
        3, tmp_path / "swarm", presence_interval_s=0.5, http="127.0.0.1:0", **FAKE
    ) as swarm:
        await swarm.wait_converged(timeout_s=20)
        urls = [m.http_urls[0] for m in swarm.members]
        async with httpx.AsyncClient() as client:
            targets = [await Target.connect(client, url) for url in urls]
            assert targets[0].info.dmoa_node and targets[0].info.model == "fake"
            results = ResultsFile(path, settings.to_json())
            seen: list[tuple[int, int]] = []
            with trio.fail_after(60):
                await run_eval(
                    targets[0], targets, items, configurations, settings, results,
                    lambda done, total: seen.append((done, total)),
                )
            assert seen[-1] == (24, 24)
            outcomes = list(results.outcomes.values())
            assert len(outcomes) == 24 and not [o.error for o in outcomes if o.error]
            calls = {o.configuration: o.inferences for o in outcomes}
            # one model: 1; M=1, k=2 with vote: 2 proposals and the origin's, no final call;
            # M=1, k=1 with moa: 2 proposals and the final; Self-MoA k=1: 2 samples, 1 final
            assert calls == {"one": 1, "m1k2-augmented-vote": 3, "m1k1-raw-moa": 3,
                             "self-k1-moa": 3}
            assert all(o.latency_s > 0 and o.tokens > 0 for o in outcomes)

            again = ResultsFile(path, settings.to_json())
            assert set(again.outcomes) == set(results.outcomes)
            asked: list[tuple[int, int]] = []
            await run_eval(
                targets[0], targets, items, configurations, settings, again,
                lambda done, total: asked.append((done, total)),
            )
            assert asked[-1] == (24, 24)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sum("outcome" in line for line in lines) == 24  # the rerun added no answer
    assert any("queue" in line for line in lines)

    rows = summarise(again, configurations, items)
    assert [r.configuration for r in rows] == [c.name for c in configurations]
    assert all(r.answers == 6 for r in rows)
    assert rows[0].against_baseline is None
    assert all(r.against_baseline is not None and r.against_baseline.items == 6 for r in rows[1:])
    written = write_alpaca_outputs(again, items, tmp_path / "alpaca")
    entries = json.loads((tmp_path / "alpaca" / "self-k1-moa.json").read_text())
    assert len(written) == 4 and len(entries) == 6
    assert set(entries[0]) == {"instruction", "output", "generator", "dataset"}
    assert entries[0]["dataset"] == "arithmetic" and entries[0]["instruction"] == items[0].prompt


def test_the_command_starts_a_swarm_writes_its_files_and_resumes(tmp_path: Path) -> None:
    args = ["eval", "--nodes", "3", "--backend", "fake", "-o", "service_time=0.01"]
    args += ["--node-option", "2:service_time=0.02", "--http-base-port", "18940"]
    args += ["--sets", "arithmetic,knowledge", "--count", "4", "--configs", "m1k1-raw-vote"]
    args += ["--results", str(tmp_path / "r.jsonl"), "--plot", str(tmp_path / "e.png")]
    args += ["--alpaca-dir", str(tmp_path / "alpaca"), "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    rows = {(r["configuration"], r["set"]): r for r in data["rows"]}
    assert set(rows) == {
        (c, s) for c in ("one", "m1k1-raw-vote") for s in ("arithmetic", "knowledge", "all")
    }
    assert rows["one", "all"]["answers"] == 8 and rows["m1k1-raw-vote", "all"]["failed"] == 0
    assert rows["m1k1-raw-vote", "all"]["against_baseline"]["items"] == 8
    # every query had its proposer and the origin's own proposal (vote makes no call):
    # the swarm's nodes hold no asker to a fair share of their model
    assert rows["m1k1-raw-vote", "all"]["inferences_per_answer"] == 2.0
    assert data["settings"]["target"]["node_options"] == {"2": {"service_time": "0.02"}}
    assert (tmp_path / "e.png").stat().st_size > 10_000
    assert len(data["alpaca_outputs"]) == 2
    lines = (tmp_path / "r.jsonl").read_text().count('"outcome"')
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["rows"] == data["rows"]
    assert (tmp_path / "r.jsonl").read_text().count('"outcome"') == lines == 16
