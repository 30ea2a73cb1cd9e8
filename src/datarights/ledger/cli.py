"""`datarights ledger ...`: the ownership loop from the command line (a thin layer over `Ledger`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import DatarightsError
from ..limits import MAX_COUNT

ledger_app = typer.Typer(no_args_is_help=True, help="The ownership service: works, owners, opt-outs, certificates, payouts.")

LEDGER_OPT = typer.Option(None, "--ledger", help="Ledger file or postgresql:// URL (default: $DATARIGHTS_LEDGER or "
                                                "./datarights-ledger.db).")
JSON_OPT = typer.Option(False, "--json", help="Print one JSON object.")


def _location(ledger: Optional[str]) -> str:
    return ledger or os.environ.get("DATARIGHTS_LEDGER") or "datarights-ledger.db"


def _open(ledger: Optional[str], create: bool = False, readonly: bool = False):
    """The ledger a command works on; reading commands open it read-only (so they also work on a
    read-only copy, and never upgrade, recover or create anything)."""
    from .core import Ledger
    return Ledger(_location(ledger), create=create, readonly=readonly)


def _emit(obj, as_json: bool, text: str | None = None) -> None:
    from ..stats import finite
    if as_json or text is None:
        typer.echo(json.dumps(finite(obj), indent=None if as_json else 2, allow_nan=False))
    else:
        typer.echo(text)


def _ids(text: str) -> list[int]:
    from ..errors import NotFound
    from ..limits import check_id

    try:
        ids = [check_id(x, "work") for x in text.split(",") if x.strip()]
    except NotFound:
        raise
    except DatarightsError:
        raise DatarightsError(f"--works must be comma-separated work ids, got {text[:40]!r}") from None
    if not ids:
        raise DatarightsError("--works names no work")
    return ids


@ledger_app.command("import")
def import_cmd(data: Path = typer.Argument(..., help="Imagefolder (metadata.jsonl with file_name, text, owner)."),
               model: Optional[Path] = typer.Option(None, "--model", help="The model trained on it (default: the shipped world model, into a ledger without models; otherwise none)."),
               name: Optional[str] = typer.Option(None, "--name", help="Dataset name (default: the folder's name)."),
               make_default: bool = typer.Option(False, "--default", help="Make the registered model the default for opt-outs and paid generations (the first model of a ledger is)."),
               ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Register a dataset's works and owners (a new version if its content changed) and its model.

    A new ledger is created only at a path where nothing exists, and only once the folder has been
    read and checked."""
    from .core import read_dataset
    from .db import url_of

    _, path = url_of(_location(ledger))
    existing = path is not None and (path.exists() or path.is_symlink())
    led = _open(ledger) if existing else None          # a ledger file that exists is checked first
    rows = read_dataset(data, log=lambda s: typer.echo(s, err=True))       # a new one is made only after this
    led = led or _open(ledger, create=True)
    r = led.import_dataset(data, model, name, log=lambda s: typer.echo(s, err=True), make_default=make_default,
                           rows=rows)
    model_text = f"model id {r['model_id']}" if r["model_id"] is not None else "no model registered"
    _emit(r, as_json, f"dataset {r['dataset']} v{r['version']}: {r['images']} images, {r['new_works']} new works, "
                      f"{r['new_owners']} new owners, {r['duplicates']} duplicates, {len(r['conflicts'])} conflicts; "
                      f"{model_text}; default model {r['default_model_id']}")


@ledger_app.command("owners")
def owners_cmd(ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Every owner with the number of works registered."""
    rows = _open(ledger, readonly=True).owners()
    _emit({"owners": rows}, as_json, "\n".join(f"{o['name']:28} {o['role']:6} {o['works']:5} works" for o in rows))


@ledger_app.command("models")
def models_cmd(ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Registered models (base models and the edited models that processing made), each on its line (the
    base model it descends from); `current`: what the line serves now; * marks the default line's."""
    rows = _open(ledger, readonly=True).models()
    _emit({"models": rows}, as_json, "\n".join(
        f"{'*' if m['default'] else ' '}{m['id']:4} {m['kind']:6} {m['weights_sha256'][:16]} dataset={m['dataset_id']} "
        f"base={m['base_id']} line={m['line']}{' current' if m['current'] else ''} {m['path']}" for m in rows)
        or "no models")


@ledger_app.command("default-model")
def default_model_cmd(model_id: int = typer.Argument(..., help="Id of a registered model (see `ledger models`)."),
                      ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Make a model's line the default for opt-outs and paid generations that name none (its current
    model serves them)."""
    r = _open(ledger).set_default_model(model_id)
    _emit(r, as_json, f"default model: {r['default_model_id']} ({r['path']})")


@ledger_app.command("token")
def token_cmd(owner: Optional[str] = typer.Option(None, "--owner", help="Owner to issue a token to."),
              admin: Optional[str] = typer.Option(None, "--admin", help="Name of a model-owner (admin) account."),
              ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Issue a new API token (printed once; the ledger keeps only its hash; an older token stops working)."""
    if bool(owner) == bool(admin):
        raise DatarightsError("give either --owner NAME or --admin NAME")
    token = _open(ledger).issue_token(owner or admin, admin=bool(admin))
    _emit({"owner": owner or admin, "role": "admin" if admin else "owner", "token": token}, as_json, token)


@ledger_app.command("lookup")
def lookup_cmd(image: Path = typer.Argument(..., help="An image: is it (or a near copy) in a registered training set?"),
               limit: int = typer.Option(10, "--limit", help="At most this many matches."),
               ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Exact (SHA-256), near-copy (perceptual hash) and look-alike matches among registered works."""
    if limit < 1:
        raise DatarightsError(f"--limit must be at least 1, got {limit}")
    rows = _open(ledger, readonly=True).lookup(image, limit)
    _emit({"matches": rows}, as_json, "\n".join(
        f"work {m['work_id']:6} {m['match']:10} owner={m['owner']!r} {m['caption']!r} in "
        + ", ".join(f"{d['dataset']} v{d['version']} (models {d['models']})" for d in m["in"]) for m in rows)
        or "no match")


@ledger_app.command("optout")
def optout_cmd(owner: str = typer.Option(..., "--owner", help="The owner filing the request."),
               works: Optional[str] = typer.Option(None, "--works", help="Comma-separated work ids (the concept they show is erased)."),
               concept: Optional[str] = typer.Option(None, "--concept", help="A concept to erase (e.g. 'Blubbo')."),
               anchor: Optional[str] = typer.Option(None, "--anchor", help="What to show instead (world: from the vocabulary)."),
               model_id: Optional[int] = typer.Option(None, "--model-id", help="A model of the line to erase it from (default: the default line); its current model is the one erased from."),
               confirm: bool = typer.Option(False, "--confirm", help="Go ahead when the works listed are only part of the concept they show (the whole concept is erased)."),
               ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """File an opt-out request: pending until `process`, or in review when someone else must agree
    (a concept with no single owner: the model owner; the model owner's request on your concept: you)."""
    r = _open(ledger).optout(owner, _ids(works) if works is not None else None, concept, anchor, model_id, confirm)
    _emit(r, as_json, f"opt-out {r['id']}: erase {r['concept']!r} (anchor {r['anchor']!r}) from model {r['model_id']}: "
                      f"{r['status']}" + (f" (waits for {'the model owner' if r['review_by'] == 'admin' else r['owner']})"
                                          if r["status"] == "review" else ""))


@ledger_app.command("review")
def review_cmd(request_id: int = typer.Argument(..., help="The opt-out in review."),
               approve: bool = typer.Option(..., "--approve/--reject", help="Approve (confirm) it, or reject (contest) it."),
               owner: Optional[str] = typer.Option(None, "--owner", help="Decide as this owner (the concept's owner confirming or contesting the model owner's request); default: as the model owner."),
               note: str = typer.Option("", "--note", help="Why (kept in the request's history)."),
               ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Decide an opt-out in review: approved requests become pending, rejected ones end there."""
    led = _open(ledger)
    actor = owner or _admin_name(led)
    r = led.review(request_id, actor, approve, note)
    _emit(r, as_json, f"opt-out {r['id']} ({r['concept']!r}): {r['status']}")


def _admin_name(led) -> str:
    admins = [o["name"] for o in led.owners() if o["role"] == "admin"]
    if len(admins) != 1:
        raise DatarightsError("give --owner NAME: " + ("the ledger has no model-owner account (make one with "
                                                      "`datarights ledger token --admin NAME`)" if not admins else
                                                      f"it has {len(admins)} model-owner accounts"))
    return admins[0]


@ledger_app.command("status")
def status_cmd(owner: Optional[str] = typer.Option(None, "--owner", help="Only this owner's requests."),
               ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Opt-out requests with their status history."""
    rows = _open(ledger, readonly=True).optouts(owner)
    _emit({"optouts": rows}, as_json, "\n".join(
        f"{r['id']:4} {r['status']:10} {r['owner']!r} {r['concept']!r} job={r['job_id']} certificate={r['certificate_id']}"
        + (f" erased from model {r['current_model_id']} (current)" if r["erased_now"] else "")
        + (" CAME BACK in the current model" if r["came_back"] else "") for r in rows) or "no opt-outs")


@ledger_app.command("process")
def process_cmd(method: str = typer.Option("ca", help="Erase method."),
                attacks: str = typer.Option("udatk,ti,paraphrase", "--attacks", help="Attacks in the audit, comma-separated (udatk, ti, paraphrase, p4d; '' for none)."),
                batch: bool = typer.Option(False, "--batch/--one-by-one", help="One multi-concept edit per model for all pending opt-outs."),
                n_target: int = typer.Option(384, "--n-target", max=MAX_COUNT, help="Held-out target images of the audit."),
                budget: int = typer.Option(16, "--budget", max=MAX_COUNT, help="Attempts per attack."),
                limit: Optional[int] = typer.Option(None, "--limit", help="Process at most this many requests."),
                judge: Optional[Path] = typer.Option(None, "--judge", help="A world judge folder (train-judge) for models of another world preset."),
                ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Erase, audit (with attacks) and certify every pending opt-out; records every result."""
    from ..audit import AuditConfig, check_verdict_reachable

    if budget < 1:
        raise DatarightsError(f"--budget must be at least 1, got {budget}")
    cfg = AuditConfig(n_target=n_target)
    check_verdict_reachable(cfg)
    jobs = _open(ledger).process(method=method, attacks=[a for a in attacks.split(",") if a], batch=batch,
                                 audit_config=cfg, attack_budget=budget, limit=limit, judge=judge,
                                 log=lambda s: typer.echo(s, err=True))
    _emit({"jobs": jobs}, as_json, "\n".join(
        f"job {j['id']}: {j['status']}; " + ", ".join(f"{t['target']}: {t['verdict']}" for t in j["audit"]["targets"])
        for j in jobs) or "no pending opt-outs")


@ledger_app.command("work")
def work_cmd(options: str = typer.Option("{}", "--options", help="Processing options as JSON (method, attacks, batch, audit_config, attack_budget, erase_options, limit, judge)."),
             ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Run the queued work (pending opt-outs, queued paid generations) until none is left. `datarights
    serve` starts this in its own process; it can also run from cron or beside the server."""
    from .worker import options_from_json, work

    r = work(_open(ledger), options_from_json(options), log=lambda s: typer.echo(s, err=True))
    _emit(r, as_json, f"ran {len(r['erase_jobs'])} erase jobs and {len(r['attribute_jobs'])} paid generations")


@ledger_app.command("certificate")
def certificate_cmd(cert_id: int = typer.Argument(..., help="Certificate id."),
                    out: Optional[Path] = typer.Option(None, "--out", help="Write the certificate to this JSON file."),
                    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
                    ledger: Optional[str] = LEDGER_OPT):
    """Print (or write) a signed erase certificate.

    --out follows the one output rule: a .json file that is none of the ledger's files (database,
    journal, key, models), never a link, device or other non-plain file, and an existing file only
    with --overwrite and only if it is a datarights certificate; written atomically."""
    from ..files import check_output_file, write_output_file

    led = _open(ledger, readonly=True)
    inputs = [*led.inputs(), *led.model_folders()]
    if out is not None:
        check_output_file(out, "certificate", inputs, overwrite)           # before anything is read
    cert = led.certificate(cert_id)
    text = json.dumps(cert, indent=2)
    if out is None:
        typer.echo(text)
        return
    write_output_file(out, "certificate", (text + "\n").encode(), inputs, overwrite)
    typer.echo(f"wrote certificate {cert_id} to {out}", err=True)


@ledger_app.command("key")
def key_cmd(ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """The ledger's public signer key, which a third party pins to check its certificates."""
    r = _open(ledger, readonly=True).published_keys()
    k = r["keys"][0]
    _emit(r, as_json, f"{k['public_key']}  (Ed25519, fingerprint {k['fingerprint']})")


@ledger_app.command("verify-certificate")
def verify_cmd(file: Path = typer.Argument(..., help="Certificate JSON file."),
               model: Optional[Path] = typer.Option(None, "--model", help="The edited model folder: recompute its weights hash."),
               public_key: list[str] = typer.Option([], "--public-key", help="A trusted signer key (hex) or its fingerprint: the ledger's published key (`datarights ledger key`). Repeat for several."),
               trusted_keys: Optional[Path] = typer.Option(None, "--trusted-keys", help="A file of trusted signer keys: a ledger's /.well-known/datarights-keys.json, or one key per line."),
               as_json: bool = JSON_OPT):
    """Check a certificate offline: signature, signer (which must be a key you trust) and (with --model)
    the edited weights. Exit 2 if any fails, also for a valid signature by a key you did not pin."""
    from .certificate import read_trusted_keys, verify_certificate

    trusted = [*public_key, *(read_trusted_keys(trusted_keys) if trusted_keys else [])]
    r = verify_certificate(file, model, trusted=trusted)
    if as_json:
        _emit(r, True)
    if not r["valid"]:
        failed = next(c for c in r["checks"] if not c["ok"])
        if not trusted:
            raise DatarightsError(f"certificate {file} is signed by {r['fingerprint']}, but no key you trust was given: "
                                  "pass the ledger's published key with --public-key (see `datarights ledger key`) or "
                                  "--trusted-keys FILE")
        raise DatarightsError(f"certificate {file} does not verify: {failed['check']}: {failed['detail']}")
    if not as_json:
        typer.echo(f"certificate {file} verifies (signer {r['fingerprint']}): "
                   + "; ".join(c["detail"] for c in r["checks"]) + f". Verdict: {r['standing']['verdict']}")


@ledger_app.command("attribute-log")
def attribute_log_cmd(image: Path = typer.Argument(..., help="The generated image."),
                      prompt: str = typer.Option(..., "--prompt", help="The prompt that generated it."),
                      revenue: str = typer.Option(..., "--revenue", help="What the generation earned, e.g. 0.04."),
                      method: Optional[str] = typer.Option(None, help="Attribution method for the owner shares (default: dtrak, the payment method; not the caption-only baseline)."),
                      model_id: Optional[int] = typer.Option(None, "--model-id", help="Model that generated it (default: the default line's current model)."),
                      currency: str = typer.Option("USD", "--currency", help="ISO 4217 code of the revenue."),
                      key: Optional[str] = typer.Option(None, "--key", help="Idempotency key of this generation: the same image and key again records nothing new."),
                      ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """Record a paid generation, exactly once: owner shares by attribution, revenue split in whole
    cents that sum exactly. A retry (same image, same --key) returns the first event."""
    r = _open(ledger).attribute_log(image, prompt, revenue, method, model_id, client_key=key, currency=currency)
    _emit(r, as_json, ("already recorded: " if r["replayed"] else "")
          + f"event {r['event_id']}: {r['revenue_cents']} cents ({r['currency']}, {r['method']}) to {len(r['payouts'])} "
          "owners; " + ", ".join(f"{p['owner']} {p['cents']}" for p in r["payouts"][:5]))


@ledger_app.command("statement")
def statement_cmd(owner: str = typer.Option(..., "--owner", help="Owner."),
                  period: str = typer.Option(..., "--period", help="Month, e.g. 2026-11."),
                  ledger: Optional[str] = LEDGER_OPT, as_json: bool = JSON_OPT):
    """What an owner earned in a month, from which generations."""
    r = _open(ledger, readonly=True).statement(owner, period)
    totals = ", ".join(f"{c / 100:.2f} {cur}" for cur, c in r["totals"].items()) or "nothing"
    _emit(r, as_json, f"{r['owner']} {r['period']}: {totals} from {r['generations']} generations "
                      f"(shares by {', '.join(r['methods']) or r['payment_method']})" + "".join(
                          f"\n  event {i['event_id']} {i['at']} {i['cents'] / 100:.2f} {i['currency']} ({i['method']}, "
                          f"share {i['share']:.3f}, image {i['image_sha256'][:12]}) {i['prompt']!r}" for i in r["items"]))
