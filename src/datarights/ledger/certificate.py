"""Verifying an erase certificate offline: the signature over the document, the signer's key (if
pinned), and, given the edited model folder, that its weights are the ones the document names."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DatarightsError
from . import signing


def read_certificate(path: str | Path) -> dict:
    p = Path(path)
    try:
        cert = json.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DatarightsError(f"certificate {p} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError, IsADirectoryError):
        raise DatarightsError(f"certificate {p} is not a JSON document") from None
    if not isinstance(cert, dict) or not isinstance(cert.get("document"), dict) or not isinstance(cert.get("signature"), str):
        raise DatarightsError(f"certificate {p} is not a datarights certificate (needs 'document' and 'signature')")
    return cert


def verify_certificate(cert: dict | str | Path, model: str | Path | None = None, public_key: str | None = None) -> dict:
    """{"valid", "checks": [{"check", "ok", "detail"}], "fingerprint"}; valid only if every check passes."""
    if not isinstance(cert, dict):
        cert = read_certificate(cert)
    doc, sig = cert["document"], cert["signature"]
    key = (doc.get("signer") or {}).get("public_key")
    checks = []
    if not isinstance(key, str):
        checks.append({"check": "signer", "ok": False, "detail": "the document names no signer key"})
        return {"valid": False, "checks": checks, "fingerprint": None}
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
