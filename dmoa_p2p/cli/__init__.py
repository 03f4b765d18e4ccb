"""The `dmoa-p2p` command line: a thin layer that parses, calls the library and prints."""

from __future__ import annotations

import click

from dmoa_p2p.cli._ask import ask, plugins
from dmoa_p2p.cli._bench import bench
from dmoa_p2p.cli._bench_backend import backend_bench
from dmoa_p2p.cli._bench_http import http_bench as http_bench
from dmoa_p2p.cli._bench_moa import moa
from dmoa_p2p.cli._chat import chat
from dmoa_p2p.cli._common import cli
from dmoa_p2p.cli._node import keygen, node
from dmoa_p2p.cli._peers import peers
from dmoa_p2p.cli._providers import providers
from dmoa_p2p.cli._simulate import simulate
from dmoa_p2p.cli._stability import stability
from dmoa_p2p.cli._swarm import swarm

COMMANDS = (keygen, node, peers, providers, swarm, ask, chat, plugins, bench, stability, simulate)
for command in COMMANDS:
    cli.add_command(command)


def main() -> None:
    cli(prog_name="dmoa-p2p", auto_envvar_prefix="DMOA_P2P")


__all__ = ["backend_bench", "cli", "click", "main", "moa"]
