"""The peers a node knew, kept in its data directory so that a restarted node finds them again."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import trio

log = logging.getLogger(__name__)

KNOWN_PEERS_FILE = "known_peers.json"
MAX_KNOWN_PEERS = 32  # enough to find the swarm again; a small file and a short burst of dials
MAX_ADDRS_PER_PEER = 4
MAX_ADDR_CHARS = 256
MAX_PEER_ID_CHARS = 128
FORGET_AFTER_S = 7 * 86400.0  # unseen this long, a peer makes way for a newcomer
_VERSION = 1


class KnownPeers:
    """Peer ids and listen addresses of peers this node was connected to, most recently seen
    first, at most `limit` of them; saved atomically (a temporary file renamed over the old
    one), so a crash mid-write leaves the previous file whole.

    What a peer claims is not taken on trust: the caller passes only the addresses that name
    the peer's own id on the IP its live connection comes from (`PeerKeeper`), so a peer can
    make this node remember at most ports of its own host, never a third party's.

    When full, the peers known longest (first seen earliest) stay and a newcomer is not
    kept, unless some entry was not seen for `FORGET_AFTER_S`: that one makes way. Many
    always-on identities cannot push out the peers a node met first, at the price of
    learning new peers only as old ones stay away for days. The user's bootstrap peers do
    not depend on this file: they are always dialled.
    """

    def __init__(
        self,
        path: Path,
        self_id: str,
        limit: int = MAX_KNOWN_PEERS,
        *,
        writes_in_thread: bool = True,
    ) -> None:
        self.path = path
        self.self_id = self_id
        self.limit = limit
        # False in virtual time: a mock clock jumps ahead while a worker thread writes
        self.writes_in_thread = writes_in_thread
        self._peers: dict[str, _Entry] = {}
        self._dirty = False

    @classmethod
    def load(
        cls,
        path: Path,
        self_id: str,
        limit: int = MAX_KNOWN_PEERS,
        *,
        writes_in_thread: bool = True,
    ) -> KnownPeers:
        """The peers saved at `path`; none if there is no file, or (with a warning) if it is
        unreadable or not what `save` writes."""
        known = cls(path, self_id, limit, writes_in_thread=writes_in_thread)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return known
        except OSError as exc:
            log.warning("cannot read %s (%s): starting without remembered peers", path, exc)
            return known
        try:
            entries = _entries(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring %s, which is not a known-peers file (%s)", path, exc)
            return known
        for peer_id, entry in sorted(entries, key=lambda item: item[1].first_seen):
            known._put(peer_id, attrs.evolve(entry, addrs=_dialable(entry.addrs)))
        known._dirty = False
        return known

    def __len__(self) -> int:
        return len(self._peers)

    def peers(self) -> list[tuple[str, tuple[str, ...]]]:
        """(peer id, addresses), the most recently seen first."""
        ordered = sorted(self._peers.items(), key=lambda item: -item[1].seen)
        return [(peer_id, entry.addrs) for peer_id, entry in ordered]

    def remember(self, peer_id: str, addrs: Iterable[str], seen: float) -> None:
        """Note that this node is connected to `peer_id`, which listens on `addrs` (already
        checked by the caller: see the class docstring)."""
        dialable = _dialable(addrs)
        old = self._peers.get(peer_id)
        self._put(peer_id, _Entry(old.first_seen if old else seen, seen, dialable))
        # a newer time alone is no reason to write the file
        self._dirty = self._dirty or old is None or old.addrs != dialable

    async def save(self, *, force: bool = False) -> None:
        """Write the file, in a worker thread (it ends with an fsync) unless `writes_in_thread`
        is False, if anything changed (or `force`); a failure is logged, not raised."""
        if not (self._dirty or force):
            return
        body = {
            "version": _VERSION,
            "peers": [
                {
                    "peer_id": peer_id,
                    "first_seen": entry.first_seen,
                    "seen": entry.seen,
                    "addrs": list(entry.addrs),
                }
                for peer_id, entry in self._peers.items()
            ],
        }
        text = json.dumps(body, indent=1, sort_keys=True)
        self._dirty = False  # before the write: a peer remembered meanwhile is written next time
        try:
            if self.writes_in_thread:
                await trio.to_thread.run_sync(_write_atomically, self.path, text)
            else:
                _write_atomically(self.path, text)
        except OSError as exc:
            self._dirty = True
            log.warning("cannot save the known peers to %s: %s", self.path, exc)

    def _put(self, peer_id: str, entry: _Entry) -> None:
        if peer_id == self.self_id or not entry.addrs or len(peer_id) > MAX_PEER_ID_CHARS:
            return
        self._peers[peer_id] = entry
        if len(self._peers) > self.limit:
            del self._peers[self._to_forget(entry.seen)]

    def _to_forget(self, now: float) -> str:
        """The entry that makes way: the least recently seen of those away for
        FORGET_AFTER_S, else the one first seen last (so, often, the newcomer)."""
        away = [p for p, e in self._peers.items() if now - e.seen >= FORGET_AFTER_S]
        if away:
            return min(away, key=lambda p: self._peers[p].seen)
        return max(self._peers, key=lambda p: self._peers[p].first_seen)


@attrs.frozen
class _Entry:
    first_seen: float  # wall-clock time this node first remembered the peer
    seen: float  # and last saw it connected
    addrs: tuple[str, ...]


def _dialable(addrs: Iterable[str]) -> tuple[str, ...]:
    """At most MAX_ADDRS_PER_PEER of `addrs`, leaving out the too long and the wildcards (a
    listener on every interface, not an address to dial)."""
    kept = (
        a
        for a in addrs
        if len(a) <= MAX_ADDR_CHARS and "/ip4/0.0.0.0/" not in a and "/ip6/::/" not in a
    )
    return tuple(kept)[:MAX_ADDRS_PER_PEER]


def _entries(body: Any) -> list[tuple[str, _Entry]]:
    """The file's valid entries; ValueError/TypeError/KeyError if its shape is wrong."""
    if not isinstance(body, dict) or body.get("version") != _VERSION:
        raise ValueError(f"expected version {_VERSION}")
    entries = []
    for entry in body["peers"]:
        peer_id, seen, addrs = entry["peer_id"], entry["seen"], entry["addrs"]
        first_seen = entry.get("first_seen", seen)  # absent from the first files written
        if not isinstance(peer_id, str) or not all(
            isinstance(t, int | float) for t in (seen, first_seen)
        ):
            raise TypeError("peer_id must be a string, seen and first_seen numbers")
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise TypeError("addrs must be a list of strings")
        entries.append((peer_id, _Entry(float(first_seen), float(seen), tuple(addrs))))
    return entries


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
