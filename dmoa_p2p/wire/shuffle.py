"""Peer-sampling shuffles on the wire: records as their authors sealed them, with their ages."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import msgpack

from dmoa_p2p.wire.envelope import PROTOCOL_VERSION
from dmoa_p2p.wire.errors import RejectReason, WireError
from dmoa_p2p.wire.messages import Presence

# A shuffle carries L records (8 by default); twice that leaves room for a larger L.
MAX_SHUFFLE_ENTRIES = 16
MAX_SHUFFLE_AGE = 1 << 16  # rounds; nobody's record lives that long
MAX_SHUFFLE_BYTES = MAX_SHUFFLE_ENTRIES * (Presence.MAX_BYTES + 16) + 64
# request: the sender's offer, to be merged and answered; reply: the answer to one's own
# request; busy: the answer when the responder has answered its share this round
ShuffleKind = Literal["request", "reply", "busy"]
SHUFFLE_KINDS: tuple[ShuffleKind, ...] = ("request", "reply", "busy")


@attrs.frozen
class ShuffleFrame:
    """One shuffle message. The stream authenticates its sender; every record is signed by
    the peer it describes and is checked by the receiver itself, so nothing here is trusted."""

    kind: ShuffleKind
    entries: tuple[tuple[bytes, int], ...] = ()


def encode_shuffle(frame: ShuffleFrame) -> bytes:
    data = msgpack.packb(
        [PROTOCOL_VERSION, frame.kind, [[sealed, age] for sealed, age in frame.entries]],
        use_bin_type=True,
    )
    assert isinstance(data, bytes)
    return data


def decode_shuffle(data: bytes) -> ShuffleFrame:
    """Parse an untrusted shuffle; raises WireError and nothing else. Records are unchecked."""
    if len(data) > MAX_SHUFFLE_BYTES:
        raise WireError(RejectReason.OVERSIZE, f"shuffle of {len(data)} bytes")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            max_bin_len=Presence.MAX_BYTES,
            max_str_len=16,
            max_array_len=MAX_SHUFFLE_ENTRIES,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # untrusted bytes break msgpack in many ways, all MALFORMED
        raise WireError(RejectReason.MALFORMED, f"shuffle: {type(exc).__name__}") from exc
    return _frame(value)


def _frame(value: Any) -> ShuffleFrame:
    if type(value) is not list or len(value) != 3:
        raise WireError(RejectReason.MALFORMED, "a shuffle is [version, kind, entries]")
    version, kind, raw = value
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise WireError(RejectReason.UNKNOWN_VERSION, f"shuffle of version {version!r}")
    if kind not in SHUFFLE_KINDS:
        raise WireError(RejectReason.UNKNOWN_KIND, f"shuffle kind {str(kind)[:16]!r}")
    if type(raw) is not list:
        raise WireError(RejectReason.MALFORMED, "shuffle entries are a list")
    entries = []
    for item in raw:
        if (
            type(item) is not list
            or len(item) != 2
            or type(item[0]) is not bytes
            or type(item[1]) is not int
            or not 0 <= item[1] <= MAX_SHUFFLE_AGE
        ):
            raise WireError(RejectReason.MALFORMED, "a shuffle entry is [record bytes, age]")
        entries.append((item[0], item[1]))
    return ShuffleFrame(kind, tuple(entries))
