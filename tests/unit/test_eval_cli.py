"""`dmoa-p2p eval`'s options: the grid listed, mistakes refused in one line before any work."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from dmoa_p2p.cli import cli


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
