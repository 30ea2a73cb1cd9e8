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


def read_trusted_keys(path: str | Path) -> list[str]:
    """Pinned signer keys from a file: the JSON a ledger publishes (`ledger key --json`, or
    `/.well-known/datarights-keys.json`: {"keys": [{"public_key": ...}]}), or one hex key (or
    fingerprint) per line."""
    p = Path(path)
    try:
        if not p.is_file():
            raise DatarightsError(f"trusted-keys file {p} does not exist")
        if p.stat().st_size > MAX_CERTIFICATE_BYTES:
            raise DatarightsError(f"trusted-keys file {p} is too large to be a list of keys")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise DatarightsError(f"trusted-keys file {p} is not UTF-8 text") from None
    except OSError as e:
        raise DatarightsError(f"cannot read trusted-keys file {p} ({e.strerror or e})") from None
    if text.lstrip().startswith("{"):
        doc = loads_json(text, f"trusted-keys file {p}")
        keys = [k.get("public_key") for k in doc.get("keys", []) if isinstance(k, dict)] \
            if isinstance(doc, dict) and isinstance(doc.get("keys"), list) else []
    else:
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    keys = [k for k in keys if isinstance(k, str) and HEX.fullmatch(k) and len(k) in (16, 64)]
    if not keys:
        raise DatarightsError(f"trusted-keys file {p} names no key (64 hex digits, or a 16-digit fingerprint)")
    return keys


def verify_certificate(cert: dict | str | Path, model: str | Path | None = None, public_key: str | None = None,
                       trusted: list[str] | tuple = ()) -> dict:
    """{"valid", "checks": [{"check", "ok", "detail"}], "fingerprint", "standing"}.

    Valid only if every check passes, and the signer is one of the pinned keys (`public_key` and
    `trusted`: keys in hex or their fingerprints, e.g. the ledger's published keys). A signature
    that checks out against a key the document itself names proves nothing (anyone can sign with a
    fresh key), so without a pinned key a certificate never verifies. `standing`: the verdict that
    accounts for the attacks (see `standing`).
    """
    if not isinstance(cert, dict):
        cert = read_certificate(cert)
    else:
        check_shape(cert)
    doc, sig = cert["document"], cert["signature"]
    key = doc["signer"]["public_key"]
    fp = signing.fingerprint(key)
    pinned = {k.strip().lower() for k in ([public_key] if public_key else []) + list(trusted) if isinstance(k, str)}
    if not pinned:
        checks = [{"check": "signer key", "ok": False,
                   "detail": f"signed by {fp}, but no trusted key was given to check it against (the ledger's "
                             "published key; anyone can sign with a key of their own)"}]
    else:
        ok = key.lower() in pinned or fp in pinned
        checks = [{"check": "signer key", "ok": ok,
                   "detail": f"signed by {fp}, a trusted key" if ok else f"signed by {fp}, which is not a trusted key"}]
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
    return {"valid": all(c["ok"] for c in checks), "checks": checks, "fingerprint": fp, "standing": standing(doc)}


ATTACK_WORDS = {
    "udatk": "UnlearnDiffAtk (an adversarial prompt optimised against the edited model)",
    "ti": "textual inversion (a new word learned from images of the concept)",
    "paraphrase": "paraphrased prompts (other words for the concept)",
}
"""Each attack as a certificate explains it to an owner."""


def _pct(x) -> str:
    return f"{100 * x:.0f}%"


def standing(doc: dict) -> dict:
    """What a certificate says, accounting for the attacks: {"verdict", "explanation", "recoverable"}.

    - *model broken on target*: the audit found the edit broke the model where the concept was;
    - *not erased*: the plain prompt still shows the concept;
    - *erased but recoverable by <attack> in x% [lo, hi] of attempts*: the audit's verdict is erased,
      but an attack's success rate is above the plain prompt's beyond doubt (the lower end of its
      95% interval above the upper end of the plain prompt's);
    - *erased*: erased, and no attack tried did better than the plain prompt.
    """
    audit = doc.get("audit") if isinstance(doc.get("audit"), dict) else {}
    concept = str((doc.get("optout") or {}).get("concept", "the concept"))
    base = audit.get("verdict")
    te, ci = audit.get("target_erased"), audit.get("target_erased_ci")
    shown = f"{_pct(1 - te)}" if isinstance(te, (int, float)) else "an unknown share"
    if base == "model broken on target":
        return {"verdict": base, "recoverable": [], "explanation":
                f"The edit damaged the model where {concept} was: for those prompts it now draws noise or nothing "
                "recognisable instead of the anchor. The concept is not shown, but the model is broken there."}
    if base != "erased":
        return {"verdict": "not erased", "recoverable": [], "explanation":
                f"The edited model still shows {concept} for {shown} of held-out prompts, too often to call it erased."}
    comeback = []
    for name, a in (doc.get("attacks") or {}).items():
        if not isinstance(a, dict):
            continue
        ci_a, ci_p = a.get("asr_ci"), a.get("asr_plain_ci")
        if isinstance(ci_a, list) and isinstance(ci_p, list) and len(ci_a) == 2 and len(ci_p) == 2 \
                and ci_a[0] > ci_p[1]:
            comeback.append({"attack": name, "asr": a.get("asr"), "asr_ci": ci_a, "attempts": a.get("attempts")})
    if comeback:
        worst = max(comeback, key=lambda c: c["asr"] or 0)
        words = ATTACK_WORDS.get(worst["attack"], worst["attack"])
        return {"verdict": f"erased but recoverable by {worst['attack']} in {_pct(worst['asr'])} "
                           f"[{_pct(worst['asr_ci'][0])}, {_pct(worst['asr_ci'][1])}] of attempts",
                "recoverable": comeback, "explanation":
                f"Ordinary prompts no longer show {concept}, but an attacker can bring it back: {words} showed it in "
                f"{_pct(worst['asr'])} of {worst['attempts']} attempts. The erasure does not hold under attack."}
    tried = ", ".join(sorted(doc.get("attacks") or {})) or "none"
    return {"verdict": "erased", "recoverable": [], "explanation":
            f"The edited model no longer shows {concept}: held-out prompts show it for {shown} of images"
            + (f" (95% interval up to {_pct(1 - ci[0])})" if isinstance(ci, list) and len(ci) == 2 else "")
            + f", and no attack tried ({tried}) brought it back more often than the plain prompt."}
