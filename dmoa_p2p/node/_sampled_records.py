"""Peer-sampling records: a peer's own sealed presence, verified once, forwarded verbatim."""

from __future__ import annotations

import collections
import hashlib
import ipaddress

import attrs

from dmoa_p2p.identity import NodeIdentity
from dmoa_p2p.wire import Presence, RejectReason, WireError, decode_envelope, seal, verify_envelope

# Records seen again and again in shuffles are verified once. One cache serves every node
# in a process (a swarm run in one process verifies each record once, not once per node);
# whether bytes are authentic does not depend on who asks. Bounded in count, and records
# a minute past their issue are dropped, so a lone node holds only the few hundred live ones.
VERIFIED_CACHE = 16384
_CACHE_HORIZON_S = 60.0


def claimed_ip(presence: Presence) -> str | None:
    """The first non-loopback IP the presence claims to listen on, if any.

    Not a relay's: every node behind one relay names the relay's IP, and the relay bounds
    how many nodes it keeps reservations for.
    """
    for addr in presence.listen_addrs:
        if "/p2p-circuit" in addr:
            continue
        parts = addr.split("/")
        if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
            try:
                ip = ipaddress.ip_address(parts[2])
            except ValueError:
                continue
            if not ip.is_loopback:
                return str(ip)
    return None


@attrs.frozen
class SignedPresence:
    """A presence sealed by the peer it describes: who, where, how loaded, issued when.

    `sealed` are the envelope bytes exactly as the peer signed them, so anyone holding the
    record can pass it on and every receiver can check the author's signature itself.
    `issued_at` is the envelope's signed timestamp (the peer's wall clock). Made by
    `issue_signed_presence` (one's own) and `RecordVerifier.read` (anyone's, checked); the
    simulations build them directly, unsigned, to run a thousand nodes in seconds.
    """

    presence: Presence
    issued_at: float
    sealed: bytes = attrs.field(repr=False)
    # the IP the presence claims (see `claimed_ip`), kept: views cap records per IP
    ip: str | None = attrs.field(
        init=False, default=attrs.Factory(lambda self: claimed_ip(self.presence), takes_self=True)
    )

    @property
    def peer_id(self) -> str:
        return self.presence.peer_id


def issue_signed_presence(
    presence: Presence, identity: NodeIdentity, now: float
) -> SignedPresence:
    """This node's own record, sealed at wall-clock time `now`."""
    if presence.peer_id != identity.peer_id:
        raise ValueError(f"a presence for {presence.peer_id} cannot be issued by {identity}")
    sealed = seal(presence, identity, now=now)
    return SignedPresence(presence, now, sealed)


class VerifiedRecords:
    """Authentic records by the digest of their bytes: least recently used first, bounded."""

    def __init__(self, size: int = VERIFIED_CACHE, horizon_s: float = _CACHE_HORIZON_S) -> None:
        self.size = size
        self.horizon_s = horizon_s
        self._records: collections.OrderedDict[bytes, SignedPresence] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._records)

    def get(self, digest: bytes) -> SignedPresence | None:
        record = self._records.get(digest)
        if record is not None:
            self._records.move_to_end(digest)
        return record

    def put(self, digest: bytes, record: SignedPresence) -> None:
        self._records[digest] = record
        horizon = record.issued_at - self.horizon_s
        while self._records and (
            len(self._records) > self.size
            or next(iter(self._records.values())).issued_at < horizon
        ):
            self._records.popitem(last=False)


SHARED_RECORDS = VerifiedRecords()


class RecordVerifier:
    """Turns untrusted record bytes into a SignedPresence, or refuses them by reason.

    A record counts only if it is a well-formed presence envelope whose signature holds and
    whose author is the peer it describes; not older than `ttl_s` nor more than
    `max_future_s` ahead of this node's clock. Verified bytes are remembered (`cache`), so a
    record passed around many times costs one signature check.
    """

    def __init__(
        self, ttl_s: float, max_future_s: float = 5.0, cache: VerifiedRecords = SHARED_RECORDS
    ) -> None:
        self.ttl_s = ttl_s
        self.max_future_s = max_future_s
        self.cache = cache
        self.refused: collections.Counter[RejectReason] = collections.Counter()
        self.signature_checks = 0

    def read(self, data: bytes, now: float) -> SignedPresence | None:
        """The verified record in `data`, or None (counted in `refused`)."""
        try:
            record = self._authentic(data)
        except WireError as exc:
            self.refused[exc.reason] += 1
            return None
        if record.issued_at <= now - self.ttl_s:
            self.refused[RejectReason.STALE] += 1
            return None
        if record.issued_at > now + self.max_future_s:
            self.refused[RejectReason.FUTURE] += 1
            return None
        return record

    def _authentic(self, data: bytes) -> SignedPresence:
        digest = hashlib.sha256(data).digest()
        known = self.cache.get(digest)
        if known is not None:
            return known
        envelope = decode_envelope(data)
        presence = envelope.body
        if not isinstance(presence, Presence):
            raise WireError(RejectReason.WRONG_CHANNEL, f"a {envelope.kind} is not a record")
        self.signature_checks += 1
        verify_envelope(envelope)
        # only the peer a record describes may sign it: nobody can vouch for another
        if presence.peer_id != envelope.author:
            raise WireError(
                RejectReason.KEY_MISMATCH,
                f"record of {presence.peer_id!r} signed by {envelope.author}",
            )
        record = SignedPresence(presence, envelope.timestamp, data)
        self.cache.put(digest, record)
        return record
