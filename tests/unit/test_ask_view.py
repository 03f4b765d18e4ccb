"""How `ask` and `chat` show a query: progress lines, streamed text, notes, cancellation."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dmoa_p2p.cli import cli
from dmoa_p2p.cli._ask import AnswerView, conversation, conversation_request, describe_progress
from dmoa_p2p.control import TEXT_EVENT
from dmoa_p2p.moa import (
    FinalStarted,
    LayerDone,
    LayerStarted,
    ProposalReceived,
    progress_to_json,
)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A short data directory with no node: the control socket path must fit 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="dmoa-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory)


def test_progress_lines_read_like_ollamas() -> None:
    assert describe_progress(LayerStarted(1, 1, 3)) == "layer 1: 0/3 proposals"
    assert describe_progress(ProposalReceived(1, 2, "p", 2, 3)) == "layer 1/2: 2/3 proposals"
    assert describe_progress(LayerDone(2, 2, 2, 3, 1)) == "layer 2/2: 2/3 proposals, 1 missing"
    assert describe_progress(FinalStarted(3)) == "aggregating 3 proposals"
    assert describe_progress(FinalStarted(0, "alone")) == "answering"


def test_progress_goes_to_stderr_and_the_streamed_text_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    view = AnswerView(text=True, progress=True)
    view.on_event(progress_to_json(LayerStarted(1, 1, 2)))
    view.on_event(progress_to_json(ProposalReceived(1, 1, "p", 1, 2)))
    view.on_event(progress_to_json(FinalStarted(2)))
    view.on_event({"event": TEXT_EVENT, "text": "Blue"})
    view.on_event({"event": TEXT_EVENT, "text": " sky"})
    view.on_event({"event": "from-a-newer-node"})
    view.finish({"answer": "Blue sky", "truncated": False}, 64)
    out, err = capsys.readouterr()
    assert out == "Blue sky\n"
    assert "layer 1: 1/2 proposals" in err and "aggregating 2 proposals" in err
    assert err.endswith("\r\x1b[2K")  # the status line is gone before the answer shows


def test_without_a_terminal_only_notes_reach_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    view = AnswerView(text=True, progress=False)
    view.on_event(progress_to_json(FinalStarted(0, "no peers available: the local model answers")))
    view.finish({"answer": "Hi", "truncated": True}, 8)
    out, err = capsys.readouterr()
    assert out == "Hi\n"
    assert err.splitlines() == [
        "note: no peers available: the local model answers",
        "note: the answer was cut at 8 tokens; raise --max-tokens for more",
    ]


def test_a_chat_shows_each_note_once(capsys: pytest.CaptureFixture[str]) -> None:
    shown: set[str] = set()
    for _turn in range(2):
        view = AnswerView(text=False, progress=False, shown_notes=shown)
        view.on_event(progress_to_json(FinalStarted(0, "alone")))
    assert capsys.readouterr().err == "note: alone\n"


def test_a_cancelled_answer_ends_its_line_and_says_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    view = AnswerView(text=True, progress=False)
    view.on_event({"event": TEXT_EVENT, "text": "Half an"})
    view.cancelled()
    assert capsys.readouterr() == ("Half an\n", "cancelled\n")


def test_a_conversation_request_carries_the_messages_not_a_prompt() -> None:
    messages = conversation("Be brief.", [("user", "Hi"), ("assistant", "Hello"), ("user", "?")])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    params = {"layers": 1, "proposers": 2, "strategy": "augmented", "aggregator": "moa"}
    params |= {"max_tokens": 64, "temperature": 0.7, "layer_timeout": 30.0}
    request = conversation_request(params, messages)
    assert "prompt" not in request and request["messages"] == messages
    assert conversation(None, [("user", "Hi")]) == [{"role": "user", "content": "Hi"}]


def test_ask_dash_reads_the_prompt_from_stdin(data_dir: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(cli, ["ask", "-", "--data-dir", str(data_dir)], input="  \n")
    assert empty.exit_code == 2 and "the prompt is empty" in empty.output
    # a prompt read from stdin gets as far as asking the node, which is not running
    result = runner.invoke(cli, ["ask", "-", "--data-dir", str(data_dir)], input="Why?\n")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: no node is answering at")
