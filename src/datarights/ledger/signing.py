"""Ed25519 signatures over canonical JSON, verifiable offline (as C2PA binds claims to hashes).

A ledger keeps one signing key beside its database (`<ledger>.key`, PEM, readable by its owner
only); a certificate carries the public key, and a verifier may pin the key it expects.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import DatarightsError
from ..files import atomic_file


def canonical(doc: dict) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


MAX_KEY_BYTES = 64 * 1024


def load_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at `path`; a missing, unreadable or damaged key is a one-line error."""
    try:
        if path.is_symlink() or not path.is_file():
            raise DatarightsError(f"signing key {path} is not a plain file")
        if path.stat().st_size > MAX_KEY_BYTES:
            raise DatarightsError(f"signing key {path} is not a PEM private key (too large)")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise DatarightsError(f"cannot read signing key {path} ({e.strerror or e})") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise DatarightsError(f"signing key {path} is not a PEM private key ({str(e).splitlines()[0][:100]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DatarightsError(f"signing key {path} is not an Ed25519 key")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The ledger's signing key; created the first time (mode 600 from the start, written atomically;
    of two processes creating it at once, the first one's key is kept and both use it)."""
    if path.exists() or path.is_symlink():
        return load_key(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        atomic_file(path, lambda tmp: Path(tmp).write_bytes(pem), mode=0o600, replace=False)
    except FileExistsError:
        return load_key(path)
    except OSError as e:
        raise DatarightsError(f"cannot write signing key {path} ({e.strerror or e})") from None
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
