"""The remembered-peers file: bounded, written atomically, a corrupt file ignored with a warning."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from dmoa_p2p.node._known_peers import (
    KNOWN_PEERS_FILE,
    MAX_ADDRS_PER_PEER,
    KnownPeers,
)

SELF = "12D3KooWself"


def addr(i: int) -> str:
    return f"/ip4/127.0.0.1/tcp/{4000 + i}/p2p/peer{i}"


def test_round_trip_keeps_the_most_recently_seen_first(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    known = KnownPeers(path, SELF)
    known.remember("peer1", [addr(1)], seen=10.0)
    known.remember("peer2", [addr(2), "/ip4/0.0.0.0/tcp/1/p2p/peer2"], seen=20.0)
    known.save()
    again = KnownPeers.load(path, SELF)
    assert again.peers() == [("peer2", (addr(2),)), ("peer1", (addr(1),))]


def test_bounded_in_peers_and_addresses_and_never_itself(tmp_path: Path) -> None:
    known = KnownPeers(tmp_path / KNOWN_PEERS_FILE, SELF, limit=4)
    for i in range(10):
        known.remember(f"peer{i}", [addr(i)] * 10, seen=float(i))
    known.remember(SELF, [addr(99)], seen=100.0)
    known.remember("x" * 500, [addr(98)], seen=100.0)
    assert [peer_id for peer_id, _ in known.peers()] == ["peer9", "peer8", "peer7", "peer6"]
    assert all(len(addrs) == MAX_ADDRS_PER_PEER for _, addrs in known.peers())
    known.save()
    assert len(KnownPeers.load(known.path, SELF, limit=4)) == 4
    assert len(KnownPeers.load(known.path, SELF, limit=2)) == 2  # a smaller bound still holds


def test_saving_replaces_the_file_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    known = KnownPeers(path, SELF)
    known.remember("peer1", [addr(1)], seen=1.0)
    known.save()
    before = path.read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    known.remember("peer2", [addr(2)], seen=2.0)
    monkeypatch.setattr(os, "replace", crash)
    with caplog.at_level(logging.WARNING):
        known.save()  # logged, not raised
    assert "cannot save the known peers" in caplog.text
    assert path.read_text() == before
    assert os.listdir(tmp_path) == [KNOWN_PEERS_FILE]  # no temporary file left behind


def test_nothing_is_written_when_nothing_changed(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    known = KnownPeers(path, SELF)
    known.remember("peer1", [addr(1)], seen=1.0)
    known.save()
    path.unlink()
    known.remember("peer1", [addr(1)], seen=2.0)  # seen again: no reason to write
    known.save()
    assert not path.exists()
    known.save(force=True)  # at stop
    assert path.exists()


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"version": 99, "peers": []}),
        json.dumps({"version": 1, "peers": [{"peer_id": 3, "seen": 1, "addrs": []}]}),
        json.dumps({"version": 1, "peers": [{"peer_id": "p", "seen": 1, "addrs": "a"}]}),
        json.dumps({"version": 1}),
    ],
)
def test_a_corrupt_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    path.write_text(content)
    with caplog.at_level(logging.WARNING):
        known = KnownPeers.load(path, SELF)
    assert len(known) == 0
    assert f"ignoring {path}" in caplog.text


def test_no_file_is_no_peers_and_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert len(KnownPeers.load(tmp_path / KNOWN_PEERS_FILE, SELF)) == 0
    assert caplog.text == ""
