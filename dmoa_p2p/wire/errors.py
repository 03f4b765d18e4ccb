"""Why a received message was refused: the reason enum and the one exception the wire raises."""

from __future__ import annotations

import enum


class RejectReason(enum.StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_KIND = "unknown_kind"
    OVERSIZE = "oversize"
    BAD_SIGNATURE = "bad_signature"
    KEY_MISMATCH = "key_mismatch"
    STALE = "stale"
    FUTURE = "future"
    REPLAY = "replay"
    # a kind that does not travel where it arrived (a task on the presence topic, ...)
    WRONG_CHANNEL = "wrong_channel"
    # a message whose publisher or sender is not the envelope's author: someone else's
    # message passed on as one's own
    WRONG_PUBLISHER = "wrong_publisher"
    # a task from a peer over its fair share of the receiver's model (refused unverified)
    OVER_FAIR_RATE = "over_fair_rate"


# Details quote attacker-controlled data; keep log lines short.
_MAX_DETAIL_CHARS = 300


class WireError(Exception):
    """A message was refused; `reason` says why in a form that can be counted."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        if len(detail) > _MAX_DETAIL_CHARS:
            detail = detail[:_MAX_DETAIL_CHARS] + "…"
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
