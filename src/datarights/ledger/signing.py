"""Ed25519 signatures over canonical JSON, verifiable offline (as C2PA binds claims to hashes).

A ledger keeps one signing key beside its database (`<ledger>.key`, PEM, readable by its owner
only); a certificate carries the public key, and a verifier may pin the key it expects.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import DatarightsError
from ..files import atomic_file


def canonical(doc: dict) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The ledger's signing key; created (mode 600, written atomically) the first time."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as e:
            raise DatarightsError(f"signing key {path} is not a PEM private key ({e})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise DatarightsError(f"signing key {path} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())

    def write(tmp):
        os.chmod(tmp, 0o600)
        Path(tmp).write_bytes(pem)
    atomic_file(path, write)
    os.chmod(path, 0o600)
    return key


def public_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def fingerprint(public_key_hex: str) -> str:
    """A short name for a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(bytes.fromhex(public_key_hex)).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, doc: dict) -> str:
    return key.sign(canonical(doc)).hex()


def verify(doc: dict, signature_hex: str, public_key_hex: str) -> bool:
    try:
        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        pub.verify(bytes.fromhex(signature_hex), canonical(doc))
        return True
    except (InvalidSignature, ValueError):
        return False
