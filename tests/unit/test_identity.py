"""Node identity: creation, persistence with mode 0600, peer id derivation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dmoa_p2p.identity import (
    KEY_FILE_NAME,
    IdentityError,
    NodeIdentity,
    load_identity,
    load_or_create_identity,
    peer_id_from_public_key,
    public_key_from_peer_id,
    verify_signature,
)


def test_identity_is_created_once_and_persists(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path / "node")
    key_file = tmp_path / "node" / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = load_or_create_identity(tmp_path / "node")
    assert again.peer_id == first.peer_id
    assert again.seed == first.seed


def test_peer_id_has_libp2p_ed25519_form_and_embeds_the_key() -> None:
    identity = NodeIdentity.generate()
    assert identity.peer_id.startswith("12D3KooW")
    assert public_key_from_peer_id(identity.peer_id) == identity.public_key
    assert peer_id_from_public_key(identity.public_key) == identity.peer_id


def test_peer_id_matches_libp2p() -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    identity = NodeIdentity.generate()
    key_pair = create_new_key_pair(identity.seed)
    assert ID.from_pubkey(key_pair.public_key).to_base58() == identity.peer_id


def test_signatures_verify_only_for_the_signed_bytes() -> None:
    identity = NodeIdentity.generate()
    signature = identity.sign(b"hello")
    assert verify_signature(identity.public_key, signature, b"hello")
    assert not verify_signature(identity.public_key, signature, b"hellO")
    assert not verify_signature(NodeIdentity.generate().public_key, signature, b"hello")


def test_corrupt_key_file_gives_an_actionable_error(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(b"short")
    with pytest.raises(IdentityError, match="keygen"):
        load_identity(path)


def test_garbage_peer_ids_embed_no_key() -> None:
    assert public_key_from_peer_id("not-base58-0OIl") is None
    assert public_key_from_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N") is None
