"""`dmoa-p2p ask` and `dmoa-p2p chat` as processes against real nodes on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from dmoa_p2p.control import call_control
from dmoa_p2p.swarm import ProcessSwarm, open_process_swarm

pytestmark = pytest.mark.integration


def fake_node(service_time_s: float) -> list[str]:
    return ["--backend", "fake", "-o", f"service_time={service_time_s}"]


async def status(swarm: ProcessSwarm, index: int = 0) -> dict[str, Any]:
    return await call_control(swarm.members[index].control_path, "status")


async def wait_for_queue(swarm: ProcessSwarm, busy: bool, timeout_s: float) -> None:
    """Until the node's queue holds a prompt (`busy`) or none."""
    with trio.fail_after(timeout_s):
        # polling another process's state is the point
        while ((await status(swarm))["queue"]["length"] > 0) != busy:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_chat_keeps_the_conversation_from_turn_to_turn(tmp_path: Path) -> None:
    async with open_process_swarm(2, tmp_path, node_args=fake_node(0.05)) as swarm:
        await swarm.wait_converged(timeout_s=60)
        turns = "remember-zebra\n\nWhat did I say?\n/exit\n"
        result = await trio.run_process(
            [sys.executable, "-m", "dmoa_p2p", "chat", "-M", "1", "-k", "1",
             "--data-dir", str(swarm.members[0].data_dir)],
            stdin=turns.encode(), capture_stdout=True, capture_stderr=True, check=False,
        )
        assert result.returncode == 0, result.stderr
        first, second = result.stdout.decode().splitlines()
        assert first.startswith("[fake ") and first.endswith("remember-zebra")
        # the second turn's prompt held the first turn: the fake model echoes its first words
        assert "remember-zebra" in second and "Conversation so far:" in second
        assert result.stderr == b""  # no terminal: no progress lines, and nothing went wrong
        prompts = (await status(swarm))["prompts"]
        assert prompts == {"accepted": 2, "answered": 2}


async def test_ctrl_c_on_ask_cancels_the_query_on_the_node(tmp_path: Path) -> None:
    async with open_process_swarm(1, tmp_path, node_args=fake_node(4.0)) as swarm:
        out, err = tmp_path / "ask.out", tmp_path / "ask.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            ask = await trio.lowlevel.open_process(
                [sys.executable, "-m", "dmoa_p2p", "ask", "Take your time.", "-M", "0",
                 "--data-dir", str(swarm.members[0].data_dir)],
                stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
            )
            await wait_for_queue(swarm, busy=True, timeout_s=30)
            ask.send_signal(signal.SIGINT)
            with trio.fail_after(10):
                await ask.wait()
        assert ask.returncode == 130
        assert err.read_text() == "cancelled\n"
        assert "Traceback" not in out.read_text()
        node = await status(swarm)
        assert node["prompts"] == {"accepted": 1, "cancelled": 1}
        # the call in service runs to its end (4 s), then the queue is free for the next prompt
        await wait_for_queue(swarm, busy=False, timeout_s=15)
        answer = await call_control(
            swarm.members[0].control_path, "ask", request={"prompt": "Again", "layers": 0}
        )
        assert answer["answer"].endswith("Again")
        assert (await status(swarm))["prompts"] == {"accepted": 2, "cancelled": 1, "answered": 1}


async def test_ctrl_c_in_chat_cancels_the_answer_and_keeps_the_conversation(
    tmp_path: Path,
) -> None:
    async with open_process_swarm(1, tmp_path, node_args=fake_node(3.0)) as swarm:
        out, err = tmp_path / "chat.out", tmp_path / "chat.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            chat = await trio.lowlevel.open_process(
                [sys.executable, "-m", "dmoa_p2p", "chat", "-M", "0",
                 "--data-dir", str(swarm.members[0].data_dir)],
                stdin=subprocess.PIPE, stdout=stdout, stderr=stderr,
            )
            assert chat.stdin is not None
            await chat.stdin.send_all(b"first question\n")
            await wait_for_queue(swarm, busy=True, timeout_s=30)
            chat.send_signal(signal.SIGINT)
            with trio.fail_after(10):
                while (await status(swarm))["prompts"].get("cancelled") != 1:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            await chat.stdin.send_all(b"second question\n/exit\n")
            await chat.stdin.aclose()
            with trio.fail_after(20):
                await chat.wait()
        assert chat.returncode == 0
        assert err.read_text() == "cancelled\n"
        # the cancelled turn was forgotten: the second prompt holds no trace of it
        assert out.read_text().splitlines()[-1].endswith("] second question")
        prompts = (await status(swarm))["prompts"]
        assert prompts == {"accepted": 2, "cancelled": 1, "answered": 1}
