"""Verifying an erase certificate offline: the signature over the document, the signer's key (if
pinned), and, given the edited model folder, that its weights are the ones the document names."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DatarightsError
from ..limits import MAX_CERTIFICATE_BYTES, loads_json
from . import signing


HEX = re.compile(r"[0-9a-fA-F]+")


def read_certificate(path: str | Path) -> dict:
    """A certificate file as a dict, checked for size, nesting and shape before anything else reads it."""
    p = Path(path)
    try:
        if not p.exists():
            raise DatarightsError(f"certificate {p} does not exist")
        if not p.is_file():
            raise DatarightsError(f"certificate {p} is not a plain file")
        if p.stat().st_size > MAX_CERTIFICATE_BYTES:
            raise DatarightsError(f"certificate {p} is larger than {MAX_CERTIFICATE_BYTES // 1024} kB; "
                                  "not a datarights certificate")
        data = p.read_bytes()
    except OSError as e:
        raise DatarightsError(f"cannot read certificate {p} ({e.strerror or e})") from None
    cert = loads_json(data, f"certificate {p}")
    check_shape(cert, f"certificate {p}")
    return cert


def check_shape(cert, what: str = "the certificate") -> None:
    """Refuse (one line) a document that is not shaped like a datarights certificate: a 'document'
    object with a signer {'algorithm', 'public_key': 64 hex digits}, a hex 'signature', and an
    'edited_model' object (if present) whose 'weights_sha256' is text."""
    def bad(why):
        raise DatarightsError(f"{what} is not a datarights certificate ({why})")

    if not isinstance(cert, dict) or not isinstance(cert.get("document"), dict):
        bad("needs a 'document' object")
    sig = cert.get("signature")
    if not isinstance(sig, str) or len(sig) != 128 or not HEX.fullmatch(sig):
        bad("'signature' must be 128 hex digits")
    doc = cert["document"]
    signer = doc.get("signer")
    if not isinstance(signer, dict):
        bad("'document.signer' must be an object")
    key = signer.get("public_key")
    if not isinstance(key, str) or len(key) != 64 or not HEX.fullmatch(key):
        bad("'document.signer.public_key' must be 64 hex digits")
    edited = doc.get("edited_model")
    if edited is not None and (not isinstance(edited, dict) or not isinstance(edited.get("weights_sha256", ""), str)):
        bad("'document.edited_model' must be an object with a text 'weights_sha256'")


def verify_certificate(cert: dict | str | Path, model: str | Path | None = None, public_key: str | None = None) -> dict:
    """{"valid", "checks": [{"check", "ok", "detail"}], "fingerprint"}; valid only if every check passes."""
    if not isinstance(cert, dict):
        cert = read_certificate(cert)
    else:
        check_shape(cert)
    doc, sig = cert["document"], cert["signature"]
    key = doc["signer"]["public_key"]
    checks = []
    if public_key is not None:
        ok = public_key.strip().lower() in (key.lower(), signing.fingerprint(key))
        checks.append({"check": "signer key", "ok": ok,
                       "detail": "the expected key" if ok else f"signed by {signing.fingerprint(key)}, not the expected key"})
    ok = signing.verify(doc, sig, key)
    checks.append({"check": "signature", "ok": ok,
                   "detail": "Ed25519 signature over the document is valid" if ok else
                   "the signature does not match the document (changed after signing, or another key)"})
    if model is not None:
        from ..models import load_model, weights_digest

        want = (doc.get("edited_model") or {}).get("weights_sha256")
        try:
            got = weights_digest(load_model(model))
            ok, detail = got == want, f"weights sha256 {got[:16]}… " + ("match" if got == want else f"!= {str(want)[:16]}…")
        except DatarightsError as e:
            ok, detail = False, f"cannot load the model: {e}"
        checks.append({"check": "edited weights", "ok": ok, "detail": detail})
    return {"valid": all(c["ok"] for c in checks), "checks": checks, "fingerprint": signing.fingerprint(key)}
