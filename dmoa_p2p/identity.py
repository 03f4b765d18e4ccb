"""A node's Ed25519 identity: created once, persisted with mode 0600, same peer id after restart."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import attrs
import base58
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

KEY_FILE_NAME = "identity.key"
_SEED_LEN = 32
# libp2p's protobuf PublicKey{Type=Ed25519(1), Data=<32 bytes>} and the identity multihash around it
_PROTOBUF_ED25519_PREFIX = b"\x08\x01\x12\x20"
_IDENTITY_MULTIHASH_PREFIX = b"\x00\x24"


class IdentityError(Exception):
    """The key file is missing, unreadable or not an Ed25519 seed."""


@functools.lru_cache(maxsize=4096)  # every envelope sent or received asks for one
def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id (base58, '12D3KooW…') of a raw 32-byte Ed25519 public key."""
    if len(public_key) != _SEED_LEN:
        raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(public_key)}")
    encoded: bytes = base58.b58encode(
        _IDENTITY_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX + public_key
    )
    return encoded.decode("ascii")


def public_key_from_peer_id(peer_id: str) -> bytes | None:
    """The Ed25519 public key embedded in a peer id, or None if it embeds none."""
    try:
        raw: bytes = base58.b58decode(peer_id)
    except ValueError:
        return None
    prefix = _IDENTITY_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX
    if len(raw) != len(prefix) + _SEED_LEN or not raw.startswith(prefix):
        return None
    return raw[len(prefix) :]


@attrs.frozen
class NodeIdentity:
    """An Ed25519 key pair; the same key signs libp2p traffic and application messages."""

    private_key: Ed25519PrivateKey = attrs.field(repr=False)
    # derived once: a node reads its peer id for every message it handles
    public_key: bytes = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(
            lambda self: self.private_key.public_key().public_bytes_raw(), takes_self=True
        ),
    )
    peer_id: str = attrs.field(
        init=False,
        eq=False,
        default=attrs.Factory(
            lambda self: peer_id_from_public_key(self.public_key), takes_self=True
        ),
    )

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        if len(seed) != _SEED_LEN:
            raise IdentityError(f"an Ed25519 seed has 32 bytes, not {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def seed(self) -> bytes:
        return self.private_key.private_bytes_raw()

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature of `data`."""
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def save_identity(identity: NodeIdentity, path: Path) -> None:
    """Write the seed to `path` readable by its owner only (0600), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(identity.seed)
    os.chmod(path, 0o600)


def load_identity(path: Path) -> NodeIdentity:
    try:
        seed = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read the node key {path}: {exc.strerror}") from exc
    try:
        return NodeIdentity.from_seed(seed)
    except IdentityError as exc:
        raise IdentityError(
            f"{path} is not a dmoa-p2p node key ({exc}); move it away and run "
            "`dmoa-p2p keygen` to make a new one"
        ) from exc


def load_or_create_identity(data_dir: Path) -> NodeIdentity:
    """The node's identity from `data_dir`, created on first start."""
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        return load_identity(path)
    identity = NodeIdentity.generate()
    save_identity(identity, path)
    return identity
