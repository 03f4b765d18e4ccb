"""`dmoa-p2p eval`'s options: the grid listed, mistakes refused in one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dmoa_p2p.cli import cli
from dmoa_p2p.eval import EvalSettings, Outcome, ResultsFile, load_set


def test_the_default_grid_is_listed() -> None:
    result = CliRunner().invoke(cli, ["eval", "--list-configs"])
    assert result.exit_code == 0, result.output
    names = result.output.split()
    assert names[0] == "one" and len(names) == 34
    assert "m2k2-augmented-dmoa-paper" in names and "self-k3-vote" in names


def test_mistakes_are_refused_in_one_line(tmp_path: Path) -> None:
    results = ["--results", str(tmp_path / "r.jsonl")]
    cases = [
        (["--configs", "m1k2-moa"], "is no configuration"),
        (["--sets", "trivia"], "neither a built-in set"),
        (["--node-option", "7:model=x.gguf"], "a node index below 3"),
        (["--backend", "no-such-backend"], "no-such-backend"),
        (["--configs", "m1k2-augmented-judge"], "judge"),
        (["--configs", "m1k2-sideways-moa"], "sideways"),
    ]
    for args, says in cases:
        result = CliRunner().invoke(cli, ["eval", *results, *args])
        assert result.exit_code == 1, (args, result.output)
        assert says in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "r.jsonl").exists()


def test_report_only_summarises_a_results_file_and_asks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    base = ["eval", "--base-url", "http://127.0.0.1:9/", "--results", str(path)]  # nobody there
    asked = ["--sets", "knowledge", "--count", "2", "--configs", "self-k1-vote", "--report-only"]
    missing = CliRunner().invoke(cli, [*base, *asked])
    assert missing.exit_code == 1 and "nothing to report" in missing.output, missing.output
    target = {"base_url": "http://127.0.0.1:9", "model": None}
    settings = {**EvalSettings().to_json(), "target": target}
    results = ResultsFile(path, settings)
    for item in load_set("knowledge", count=2):
        right = item.check["answers"][0]
        results.add(Outcome("one", item.set, item.id, 0, item.prompt, "no", False, 1.0, 1, 9))
        results.add(
            Outcome("self-k1-vote", item.set, item.id, 0, item.prompt, right, True, 2.0, 2, 9)
        )
    result = CliRunner().invoke(cli, [*base, *asked, "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["configuration"]: row for row in json.loads(result.output)["rows"]}
    assert (rows["one"]["correct"], rows["self-k1-vote"]["correct"]) == (0, 2)
