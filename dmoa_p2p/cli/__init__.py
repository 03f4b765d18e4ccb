"""The `dmoa-p2p` command line: a thin layer that parses, calls the library and prints."""

from __future__ import annotations

import click

from dmoa_p2p.cli._ask import ask, plugins
from dmoa_p2p.cli._chat import chat
from dmoa_p2p.cli._common import cli
from dmoa_p2p.cli._node import keygen, node
from dmoa_p2p.cli._peers import peers
from dmoa_p2p.cli._providers import providers
from dmoa_p2p.cli._stability import stability
from dmoa_p2p.cli._swarm import swarm

COMMANDS = (keygen, node, peers, providers, swarm, ask, chat, plugins, stability)
for command in COMMANDS:
    cli.add_command(command)
cli.lazy.update(
    bench="dmoa_p2p.cli._benches:bench",
    simulate="dmoa_p2p.cli._simulate:simulate",
    eval="dmoa_p2p.cli._eval:eval_command",
)


def main() -> None:
    cli(prog_name="dmoa-p2p", auto_envvar_prefix="DMOA_P2P")


__all__ = ["cli", "click", "main"]
