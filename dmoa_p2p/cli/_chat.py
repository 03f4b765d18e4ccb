"""`dmoa-p2p chat`: a multi-turn conversation with the running local node."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from dmoa_p2p.cli._ask import (
    AnswerView,
    conversation,
    conversation_request,
    query_options,
    run_query,
    trace_tree,
)
from dmoa_p2p.cli._common import console, data_dir_option
from dmoa_p2p.config import control_socket_path

EXIT_COMMANDS = ("/exit", "/quit", "/bye")


def read_turn(interactive: bool) -> str | None:
    """The user's next message; None when they are done (Ctrl-D, end of input, `/exit`)."""
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            if interactive:
                click.echo()
            return None
        except KeyboardInterrupt:  # at the prompt it only clears the line, as in a shell
            click.echo("\n(/exit or Ctrl-D to leave)", err=True)
            continue
        text = line.strip()
        if text in EXIT_COMMANDS:
            return None
        if text:
            return line


@click.command()
@click.option("--system", help="A system message the conversation starts with.")
@query_options
@data_dir_option
def chat(system: str | None, data_dir: Path, show_trace: bool, **params: Any) -> None:
    """Talk with the running local node; every turn is a Mixture-of-Agents query that sees
    the conversation so far.

    `/exit` or Ctrl-D ends it; Ctrl-C stops the answer being written (that turn is
    forgotten) and keeps the conversation.
    """
    path = control_socket_path(data_dir)
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):  # line editing and history where available
            import readline  # noqa: F401
        click.echo("/exit or Ctrl-D to leave; Ctrl-C stops an answer", err=True)
    turns: list[tuple[str, str]] = []
    shown_notes: set[str] = set()  # e.g. "no peers available" once, not every turn
    while (text := read_turn(interactive)) is not None:
        asked = [*turns, ("user", text)]
        request = conversation_request(params, conversation(system, asked))
        view = AnswerView(text=True, progress=sys.stderr.isatty(), shown_notes=shown_notes)
        try:
            answer = run_query(path, request, view)
        except click.ClickException as exc:  # e.g. refused: the conversation goes on
            exc.show()
            continue
        if answer is None:
            continue
        view.finish(answer, params["max_tokens"])
        if show_trace:
            console.print(trace_tree(answer["trace"]))
        turns = [*asked, ("assistant", answer["answer"])]
