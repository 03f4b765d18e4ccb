"""Receive-side admission of envelopes: authenticity, consistency, freshness and replay."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from dmoa_p2p.wire.codec import decode_envelope, verify_envelope
from dmoa_p2p.wire.envelope import Envelope
from dmoa_p2p.wire.errors import RejectReason, WireError
from dmoa_p2p.wire.messages import Message, Presence, Task

# A receiver's own check of a message whose author is known to be genuine, before anything is
# remembered: raises WireError to refuse it (e.g. a peer over its rate, refused cheaply).
Precheck = Callable[[Envelope], None]


def check_consistency(env: Envelope) -> None:
    """Kind-specific rules that tie the body to its authenticated author."""
    body = env.body
    # A presence speaks for its sender only; anyone else announcing it is an impersonation.
    if isinstance(body, Presence) and body.peer_id != env.author:
        raise WireError(
            RejectReason.KEY_MISMATCH,
            f"presence for {body.peer_id!r} signed by {env.author}",
        )
    # only the origin of a query hands out its tasks
    if isinstance(body, Task) and body.origin != env.author:
        raise WireError(
            RejectReason.KEY_MISMATCH, f"task of origin {body.origin!r} signed by {env.author}"
        )


class MessageGate:
    """Decides whether received bytes are a genuine, fresh, first-seen message.

    Replays are detected by (author, nonce) within the freshness window. The cache holds
    at most `replay_capacity` entries: entries older than the window are forgotten (such
    messages are STALE anyway), and when the cache is full of fresh entries the oldest one is
    evicted, so that message could be replayed until it turns stale. Memory stays bounded
    under a flood at that cost; size the capacity above the expected messages per window.
    The cache also assumes the clock does not step backwards by more than the window.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        freshness_s: float = 60.0,
        max_future_s: float = 5.0,
        replay_capacity: int = 65536,
    ) -> None:
        if not freshness_s > 0 or not max_future_s >= 0:
            raise ValueError("freshness_s must be > 0 and max_future_s >= 0")
        if replay_capacity < 1:
            raise ValueError("replay_capacity must be at least 1")
        self._clock = clock
        self.freshness_s = freshness_s
        self.max_future_s = max_future_s
        self.replay_capacity = replay_capacity
        # (author, nonce) -> message timestamp, in arrival order
        self._seen: collections.OrderedDict[tuple[str, bytes], float] = collections.OrderedDict()
        self.rejections: collections.Counter[RejectReason] = collections.Counter()
        self.accepted = 0
        # fresh entries pushed out by a full cache: each is a replay the gate can no longer see
        self.replay_evictions = 0

    @property
    def replay_cache_size(self) -> int:
        return len(self._seen)

    def admit(
        self,
        data: bytes,
        publisher: str | None = None,
        kinds: tuple[type[Message], ...] | None = None,
        precheck: Precheck | None = None,
    ) -> Envelope:
        """The envelope in `data` if it passes every check; raises WireError otherwise.

        `publisher`: the peer the channel authenticated as the author of `data`, or None: the
        pubsub publisher (GossipSub keeps the original publisher when relaying) or the sender
        of a direct stream (its secure channel authenticates it; senders send their own).
        `kinds`: the message classes the channel `data` arrived on carries (PRESENCE_KINDS,
        MOA_KINDS); None accepts every kind. The signature is verified in every case.
        `precheck` runs as soon as the author is known to be genuine: before the signature is
        verified when `publisher` vouches for it (so refusing costs no verification), after.
        """
        try:
            env = self._check(data, publisher, kinds, precheck)
        except WireError as exc:
            self.rejections[exc.reason] += 1
            raise
        self.accepted += 1
        return env

    def _check(
        self,
        data: bytes,
        publisher: str | None,
        kinds: tuple[type[Message], ...] | None,
        precheck: Precheck | None,
    ) -> Envelope:
        env = decode_envelope(data)
        # before the signature: a kind that does not belong here is not worth verifying
        if kinds is not None and type(env.body) not in kinds:
            expected = ", ".join(kind.KIND for kind in kinds)
            raise WireError(RejectReason.WRONG_CHANNEL, f"a {env.kind} where {expected} travel")
        # Before the replay cache: a copy republished by another peer must not take the place
        # of the author's own, which would then be refused as a replay.
        if publisher is not None and publisher != env.author:
            raise WireError(
                RejectReason.WRONG_PUBLISHER, f"{env.kind} of {env.author} sent by {publisher}"
            )
        if precheck is not None and publisher is not None:
            precheck(env)
        # Authenticate before anything is remembered, so forgeries cannot fill the replay cache.
        verify_envelope(env)
        check_consistency(env)
        if precheck is not None and publisher is None:
            precheck(env)
        now = self._clock()
        if env.timestamp < now - self.freshness_s:
            raise WireError(RejectReason.STALE, f"{now - env.timestamp:.1f} s old")
        if env.timestamp > now + self.max_future_s:
            raise WireError(RejectReason.FUTURE, f"{env.timestamp - now:.1f} s ahead")
        self._remember((env.author, env.nonce), env.timestamp, now)
        return env

    def _remember(self, key: tuple[str, bytes], timestamp: float, now: float) -> None:
        self._forget_stale(now)
        if key in self._seen:
            raise WireError(RejectReason.REPLAY, f"nonce {key[1].hex()} from {key[0]} seen before")
        if len(self._seen) >= self.replay_capacity:
            self._seen.popitem(last=False)
            self.replay_evictions += 1
        self._seen[key] = timestamp

    def _forget_stale(self, now: float) -> None:
        # Arrival order roughly follows timestamps, so stale entries gather at the front; each
        # entry is dropped once, which keeps admit amortised O(1).
        horizon = now - self.freshness_s
        while self._seen:
            key, timestamp = next(iter(self._seen.items()))
            if timestamp >= horizon:
                break
            del self._seen[key]
