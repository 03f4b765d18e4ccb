"""Remembered peers: only their own addresses, bounded, written atomically off the trio thread."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import cast

import pytest

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.node import _known_peers
from dmoa_p2p.node._known_peers import (
    FORGET_AFTER_S,
    KNOWN_PEERS_FILE,
    MAX_ADDRS_PER_PEER,
    KnownPeers,
)
from dmoa_p2p.node._watch import own_addresses
from dmoa_p2p.overlay import Overlay

SELF = "12D3KooWself"


def addr(i: int) -> str:
    return f"/ip4/127.0.0.1/tcp/{4000 + i}/p2p/peer{i}"


class HostOverlay:
    """Just enough of an overlay for `own_addresses`: connected peers and where they are."""

    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = hosts

    def remote_host(self, peer_id: str) -> str | None:
        return self.hosts.get(peer_id)


def test_a_peer_can_make_a_node_remember_only_ports_of_its_own_host() -> None:
    peer, other = NodeIdentity.generate().peer_id, NodeIdentity.generate().peer_id
    overlay = cast(Overlay, HostOverlay({peer: "203.0.113.7", other: "2001:db8::1"}))
    claimed = [
        f"/ip4/203.0.113.7/tcp/4001/p2p/{peer}",
        f"/ip4/203.0.113.7/tcp/22/p2p/{peer}",  # another port of its own host: its business
        f"/ip4/127.0.0.1/tcp/4001/p2p/{peer}",  # this node's own loopback
        f"/ip4/192.168.1.1/tcp/80/p2p/{peer}",  # a third party on this node's network
        f"/ip4/203.0.113.7/tcp/4001/p2p/{other}",  # its host, another peer's id
        "/ip4/203.0.113.7/tcp/4001",  # no peer id
        f"/dns4/example.com/tcp/4001/p2p/{peer}",  # a name, not where it connects from
        "not an address",
    ]
    assert own_addresses(overlay, peer, claimed) == tuple(claimed[:2])
    assert own_addresses(overlay, other, [f"/ip6/2001:db8:0::1/tcp/1/p2p/{other}"]) == (
        f"/ip6/2001:db8:0::1/tcp/1/p2p/{other}",
    )
    assert own_addresses(overlay, "not-connected", claimed) == ()


async def test_round_trip_keeps_the_most_recently_seen_first(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    known = KnownPeers(path, SELF)
    known.remember("peer1", [addr(1)], seen=10.0)
    wildcards = ["/ip4/0.0.0.0/tcp/1/p2p/peer2", "/ip6/::/tcp/1/p2p/peer2"]
    known.remember("peer2", [*wildcards, addr(2)], seen=20.0)
    known.remember("peer3", wildcards, seen=30.0)  # nothing left to dial: not remembered
    await known.save()
    again = KnownPeers.load(path, SELF)
    assert again.peers() == [("peer2", (addr(2),)), ("peer1", (addr(1),))]


async def test_bounded_in_peers_and_addresses_and_never_itself(tmp_path: Path) -> None:
    known = KnownPeers(tmp_path / KNOWN_PEERS_FILE, SELF, limit=4)
    for i in range(10):
        known.remember(f"peer{i}", [addr(i)] * 10, seen=float(i))
    known.remember(SELF, [addr(99)], seen=100.0)
    known.remember("x" * 500, [addr(98)], seen=100.0)
    assert len(known) == 4
    assert all(len(addrs) == MAX_ADDRS_PER_PEER for _, addrs in known.peers())
    await known.save()
    assert len(KnownPeers.load(known.path, SELF, limit=4)) == 4
    assert len(KnownPeers.load(known.path, SELF, limit=2)) == 2  # a smaller bound still holds


async def test_newcomers_never_push_out_the_peers_known_longest(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    known = KnownPeers(path, SELF, limit=4)
    for i in range(4):
        known.remember(f"peer{i}", [addr(i)], seen=float(i))
    for t in range(10, 20):  # every tick: the peers still around, then always-on newcomers
        for i in range(4):
            known.remember(f"peer{i}", [addr(i)], seen=float(t))
        for i in range(10, 14):
            known.remember(f"sybil{i}", [addr(i)], seen=float(t))
    assert {peer_id for peer_id, _ in known.peers()} == {f"peer{i}" for i in range(4)}
    await known.save()
    again = KnownPeers.load(path, SELF, limit=3)  # a smaller bound keeps the oldest too
    assert {peer_id for peer_id, _ in again.peers()} == {"peer0", "peer1", "peer2"}


def test_a_peer_away_for_days_makes_way_for_a_newcomer(tmp_path: Path) -> None:
    known = KnownPeers(tmp_path / KNOWN_PEERS_FILE, SELF, limit=2)
    known.remember("gone", [addr(1)], seen=0.0)
    known.remember("here", [addr(2)], seen=1.0)
    known.remember("here", [addr(2)], seen=FORGET_AFTER_S)
    known.remember("new", [addr(3)], seen=FORGET_AFTER_S)
    assert {peer_id for peer_id, _ in known.peers()} == {"here", "new"}


def test_a_file_from_before_first_seen_was_kept_still_loads(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    path.write_text(
        json.dumps({"version": 1, "peers": [{"peer_id": "p", "seen": 1, "addrs": [addr(1)]}]})
    )
    assert KnownPeers.load(path, SELF).peers() == [("p", (addr(1),))]


async def test_the_file_is_written_off_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[threading.Thread] = []
    write = _known_peers._write_atomically

    def watched(path: Path, text: str) -> None:
        writers.append(threading.current_thread())
        write(path, text)

    monkeypatch.setattr(_known_peers, "_write_atomically", watched)
    known = KnownPeers(tmp_path / KNOWN_PEERS_FILE, SELF)
    known.remember("peer1", [addr(1)], seen=1.0)
    await known.save()
    assert len(writers) == 1
    assert writers[0] is not threading.main_thread()  # an fsync would block every task
    assert KnownPeers.load(known.path, SELF).peers() == [("peer1", (addr(1),))]


async def test_saving_replaces_the_file_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    known = KnownPeers(path, SELF)
    known.remember("peer1", [addr(1)], seen=1.0)
    await known.save()
    before = path.read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    known.remember("peer2", [addr(2)], seen=2.0)
    monkeypatch.setattr(os, "replace", crash)
    with caplog.at_level(logging.WARNING):
        await known.save()  # logged, not raised
    assert "cannot save the known peers" in caplog.text
    assert path.read_text() == before
    assert os.listdir(tmp_path) == [KNOWN_PEERS_FILE]  # no temporary file left behind
    monkeypatch.undo()
    await known.save()  # the failed write is tried again
    assert "peer2" in path.read_text()


async def test_nothing_is_written_when_nothing_changed(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    known = KnownPeers(path, SELF)
    known.remember("peer1", [addr(1)], seen=1.0)
    await known.save()
    path.unlink()
    known.remember("peer1", [addr(1)], seen=2.0)  # seen again: no reason to write
    await known.save()
    assert not path.exists()
    await known.save(force=True)  # at stop
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
