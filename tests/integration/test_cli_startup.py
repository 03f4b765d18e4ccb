"""`dmoa-p2p node` refusing bad network settings in one line, and `peers` on a running node."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from dmoa_p2p.cli._peers import short_peer_id
from dmoa_p2p.swarm import open_process_swarm

pytestmark = pytest.mark.integration
PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
FAKE = ["--backend", "fake"]


def dmoa(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmoa_p2p", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a node that refused to start (what it logged before may precede)."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_is_refused(tmp_path: Path, taken_port: int) -> None:
    listen = f"/ip4/127.0.0.1/tcp/{taken_port}"
    line = refused(dmoa("node", "--data-dir", str(tmp_path), *FAKE, "--listen", listen))
    assert str(taken_port) in line and "in use" in line


@pytest.mark.parametrize(
    ("option", "addr", "says"),
    [
        ("--listen", "/ip4/127.0.0.1/tpc/4001", "tpc"),
        ("--bootstrap", "/ip4/127.0.0.1/tcp/4001/p2p/notapeerid", "'notapeerid' is not a peer id"),
        ("--bootstrap", f"/ip4/999.0.0.1/tcp/4001/p2p/{PEER}", "999.0.0.1"),
    ],
)
def test_a_bad_address_is_refused(tmp_path: Path, option: str, addr: str, says: str) -> None:
    args = ["node", "--data-dir", str(tmp_path), *FAKE, "--listen", "/ip4/127.0.0.1/tcp/0"]
    line = refused(dmoa(*args, option, addr))
    assert says in line


async def test_peers_lists_the_node_itself_first_in_80_columns(tmp_path: Path) -> None:
    async with open_process_swarm(3, tmp_path, node_args=FAKE) as swarm:
        await swarm.wait_converged(timeout_s=60)
        # a private node names no address while it waits for a relay's reservation ("-")
        for _ in range(20):
            result = dmoa("peers", "--data-dir", str(swarm.members[0].data_dir))
            if result.stdout.count("127.0.0.1:") >= 3:
                break
            await trio.sleep(0.5)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    rows = [line for line in lines if line.startswith("12D3KooW")]
    ids = [short_peer_id(m.peer_id) for m in swarm.members]
    assert len(rows) == 3 and rows[0].startswith(ids[0]) and rows[0].rstrip().endswith("self")
    assert {row.split()[0] for row in rows[1:]} == set(ids[1:])
    assert all("127.0.0.1:" in row for row in rows)
