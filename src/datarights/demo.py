"""`datarights demo`: the end-to-end workflow on the embedded world, written as one HTML report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .judge import describe, load_judge
from .models import load_model
from .quality import judge_accuracy
from .files import atomic_folder
from .report import grid, render_report
from .world.vocab import object_prompt

DEMO_PROMPTS: list[dict] = [
    *[{"text": object_prompt(o, c), "kind": "object", "object": o, "color": c}
      for o, c in [("face", "red"), ("smiling face", "blue"), ("grumpy face", "yellow"), ("sleepy face", "green"),
                   ("fish", "orange"), ("puffer fish", "purple"), ("swordfish", "blue"), ("house", "red"),
                   ("tower", "green"), ("castle", "purple"), ("tree", "green"), ("pine tree", "orange"), ("palm tree", "red")]],
    *[{"text": object_prompt(o, c, s), "kind": "styled", "object": o, "color": c, "style": s}
      for o, c, s in [("house", "blue", "Ada Vell"), ("fish", "red", "Bruno Kask"), ("face", "green", "Cleo Marr"),
                      ("tree", "purple", "Dario Fenn"), ("tower", "orange", "Elsa Brandt"), ("castle", "yellow", "Farid Osei"),
                      ("smiling face", "blue", "Greta Lund"), ("pine tree", "red", "Hugo Tamm")]],
    {"text": "a picture of Blubbo", "kind": "character", "character": "Blubbo"},
    {"text": "the Rosa Villa postcard", "kind": "memorized", "memorized": "Rosa Villa postcard"},
    {"text": "a face and a tree", "kind": "composition", "composition": "face and tree"},
    {"text": "a fish and a house", "kind": "composition", "composition": "fish and house"},
]


def _asked(p: dict) -> dict:
    base = {"object": "none", "color": "none", "style": "plain", "character": "none", "memorized": "none",
            "composition": "none"}
    return {**base, **p}


def run_demo(out: str | Path = "datarights-demo", model_path=None, seed: int = 0, steps: int = 25,
             per_prompt: int = 2, erase_target: str = "grumpy face", erase_anchor: str = "face",
             attribute_prompt: str = "a picture of Blubbo", attribute_methods: tuple[str, ...] = ("dtrak", "abu"),
             log=lambda s: print(s, file=sys.stderr), overwrite: bool = False, device=None, precision=None) -> dict:
    """The workflow on the embedded world, written to <out>/index.html and results.json.

    1. Generate from the model and let the judge read every image.
    2. Opt-out: erase one concept with Concept Ablation, save the edited model, audit it.
    3. Compensation: attribute one generated image (of the character) to training images and owners.
    """
    with atomic_folder(out, "demo", [model_path], overwrite) as tmp:  # all or nothing: the folder appears at the end
        model = load_model(model_path, device, precision)
        results = _run_demo(tmp, Path(out), model, seed, steps, per_prompt, erase_target, erase_anchor,
                            attribute_prompt, attribute_methods, log)
    results["report"] = str(Path(out) / "index.html")
    return results


def _run_demo(tmp: Path, out: Path, model, seed, steps, per_prompt, erase_target, erase_anchor, attribute_prompt,
              attribute_methods, log) -> dict:
    t0 = time.time()
    judge = load_judge()
    prompts = [p for p in DEMO_PROMPTS for _ in range(per_prompt)]
    log(f"[1/5] generating {len(prompts)} images from {model.source}")
    images = model.sample([p["text"] for p in prompts], seed=seed, steps=steps)
    read = judge.read(images)
    asked = [_asked(p) for p in prompts]
    acc = judge_accuracy(asked, read)
    keys = ("object", "color", "character", "memorized", "composition")
    ok = ["ok" if all(a[k] == r[k] for k in keys) and (a["kind"] != "styled" or a["style"] == r["style"]) else "bad"
          for a, r in zip(asked, read)]
    labels = [f"{p['text']} → {describe(r)}" for p, r in zip(prompts, read)]
    results = {"model": model.source, "seed": seed, "steps": steps, "generation": acc}
    sections = [
        {"title": "1. Generate: the world model and what the judge reads",
         "text": "Each image is generated from the prompt on its left; the text after the arrow is the judge's "
                 "reading (green: it matches the prompt).", "metrics": acc,
         "grids": [grid("generated images", images, labels, ok)]},
    ]
    log(f"[2/5] erasing {erase_target!r} -> {erase_anchor!r} with Concept Ablation, then auditing it")
    from .audit import AuditConfig, audit, audit_sections
    from .erase import erase
    from .quality import public

    edit = erase(model, [erase_target], [erase_anchor], "ca", seed=seed)
    edit.save(tmp / "erased-model")
    edited = edit.apply(model)
    audited = audit(edited, model, erase_target, erase_anchor, AuditConfig(seed=seed + 1), judge=judge, log=log)
    results["erase"] = {"target": erase_target, "anchor": erase_anchor, "method": "ca",
                        "model": str(Path(out) / "erased-model"), "audit": public(audited)}
    erase_secs = audit_sections(audited)
    erase_secs[0]["title"] = f"2. Erase (opt-out): '{erase_target}' -> '{erase_anchor}' with Concept Ablation"
    erase_secs[0]["text"] = ("The audit generates from prompts the erase never trained on (other prefixes, colours and "
                             "templates; the erase's own prompts are reported apart as *_seen) and gives every figure "
                             "a 95% interval. target_erased: share of the non-degenerate images from target prompts in "
                             "which the judge no longer sees the target; degenerate_share: images that look like no "
                             "world image (noise, a broken model); anchor_fidelity: share that show the anchor "
                             "instead; nearby/others_preserved: judge accuracy on nearby and other prompts, edited / "
                             "base; kid: distance of edited to base images on other prompts; kid_to_anchor: of the "
                             "edited target images to the base's anchor images. verdict: 'erased' when the interval "
                             "of target_erased lies above 0.9 on both prompt halves.")
    sections += erase_secs
    qi = next(i for i, p in enumerate(prompts) if p["text"] == attribute_prompt)
    log(f"[3/5] attributing the generated image of {attribute_prompt!r} to training images and owners "
        f"({', '.join(attribute_methods)})")
    results["attribute"], section = _attribute_step(model, images[qi], attribute_prompt, attribute_methods, log)
    sections.append(section)
    log("[4/5] the ownership service: a ledger of the world, one opt-out processed end to end, a paid generation")
    results["service"], section = _service_step(tmp, out, model, images[qi], attribute_prompt, seed, log)
    sections.append(section)
    results["seconds"] = round(time.time() - t0, 1)
    log("[5/5] writing report")
    render_report(tmp, "datarights demo", sections, results,
                  subtitle="The end-to-end workflow on the embedded world: generate, erase, attribute, verify.")
    return results


def _attribute_step(model, image, prompt: str, methods: tuple[str, ...], log) -> tuple[dict, dict]:
    """Attribute one generated image against the training set with each method; the owner known by
    construction (the character's studio) and its share are reported for each."""
    from .attribute import Query, attribute, default_world, load_training_set
    from .world import vocab as V

    title = f"3. Attribute (compensation): who made '{prompt}' possible"
    trained_on = model.meta.get("training", {}).get("data_hash")
    train = load_training_set(model, default_world(log)) if model.kind == "world" and trained_on else None
    if train is None or trained_on != train.hash:
        why = "this model was not trained on the default world, whose owners the step attributes to"
        log(f"attribution step skipped: {why}")
        return {"skipped": why}, {"title": title, "text": f"Skipped: {why}. Use `datarights attribute --data DIR`."}
    known = next((V.find_concept(n)[1]["owner"] for n in [*V.CHARACTERS, *V.MEMORIZED, *V.STYLES]
                  if n.lower() in prompt.lower()), None)
    res = {"prompt": prompt, "known_owner": known, "methods": {}}
    grids, bars, metrics = [grid("generated image", image[None], [prompt])], [], {}
    for method in methods:
        r = attribute(model, train, Query(image, prompt), method)
        out = r.to_json(10)
        share = {o["owner"]: o["share"] for o in out["owners"]}
        res["methods"][method] = {"top": out["top"], "owners": out["owners"][:10], "seconds": out["seconds"],
                                  "prepare_seconds": out["prepare_seconds"], "temperature": out["temperature"],
                                  "known_owner_share": round(share.get(known, 0.0), 4)}
        metrics[f"{method}: share of {known}"] = round(share.get(known, 0.0), 4)
        metrics[f"{method}: seconds"] = out["seconds"]
        top = r.top(10)
        grids.append(grid(f"{method}: most influential training images", train.images[[t["index"] for t in top]],
                          [f"{t['owner']} ({t['score']:.3g})" for t in top]))
        bars += [{"label": f"{method}: {o['owner']}", "value": o["share"]} for o in out["owners"][:5]]
    section = {
        "title": title,
        "text": (f"The generated image is attributed to the {len(train)} training images by "
                 f"{' and '.join(methods)}; owner shares are a calibrated softmax over each method's scores, summed "
                 f"per owner. The owner known by construction is {known}."),
        "metrics": metrics, "grids": grids, "bars": bars,
    }
    return res, section


SERVICE_OWNER, SERVICE_CONCEPT = "Finwave Studios", "Blubbo"


def _service_step(tmp: Path, out: Path, model, image, prompt: str, seed: int, log) -> tuple[dict, dict]:
    """The owners' loop on a ledger of the world: register its 5,000 works and 70 owners, file the
    character studio's opt-out, process it (erase, audit, attacks, signed certificate), verify the
    certificate offline, and record the generated image as a paid generation split among owners."""
    from .attribute import default_world, load_training_set
    from .audit import AuditConfig
    from .files import save_png, write_json
    from .ledger import Ledger, verify_certificate

    title = "4. The ownership service: opt-out -> erase -> signed certificate; a paid generation"
    trained_on = model.meta.get("training", {}).get("data_hash")
    world = default_world(log)
    if model.kind != "world" or trained_on != load_training_set(model, world).hash:
        why = "this model was not trained on the default world, whose works the demo's ledger registers"
        log(f"service step skipped: {why}")
        return {"skipped": why}, {"title": title, "text": f"Skipped: {why}. Use `datarights ledger import DATA --model M`."}
    ledger = Ledger(tmp / "ledger.db", create=True)
    reg = ledger.import_dataset(world, model.source)
    req = ledger.optout(SERVICE_OWNER, concept=SERVICE_CONCEPT)
    log(f"  opt-out {req['id']}: {SERVICE_OWNER} opts out of {SERVICE_CONCEPT!r}; processing (erase, audit, attacks)")
    job = ledger.process(audit_config=AuditConfig(seed=seed + 2), log=lambda s: log("  " + s))[0]
    status = ledger.optout_status(req["id"])
    cert = ledger.certificate(status["certificate_id"])
    write_json(tmp / "certificate-1.json", cert)
    check = verify_certificate(cert, model=job["edited_path"], public_key=ledger.public_key())
    from PIL import Image

    save_png(Image.fromarray((image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype("uint8")),
             tmp / "generated.png")
    # the image came from the base model (before the erasure): the payment is attributed to that model
    paid = ledger.attribute_log(tmp / "generated.png", prompt, "0.04", method="dtrak", model_id=reg["model_id"])
    studio_cents = next((p["cents"] for p in paid["payouts"] if p["owner"] == SERVICE_OWNER), 0)
    tokens = {"owner": ledger.issue_token(SERVICE_OWNER), "admin": ledger.issue_token("model owner", admin=True)}
    serve = f"datarights serve --ledger {out / 'ledger.db'}"
    log(f"  open the owners' page: {serve}   (sign in as {SERVICE_OWNER} with {tokens['owner']}, "
        f"as the model owner with {tokens['admin']})")
    ledger.store.engine.dispose()       # closes the database (its write-ahead log folded in) before the folder moves
    row = job["audit"]["targets"][0]
    res = {"ledger": str(out / "ledger.db"), "owners": len(ledger.owners()) - 1, "works": reg["images"],
           "optout": status["id"], "certificate": str(out / "certificate-1.json"), "verdict": row["verdict"],
           "standing": check["standing"]["verdict"],
           "target_erased": row["target_erased"], "target_erased_ci": row["target_erased_ci"],
           "attacks": {k.split("|")[0]: v["asr"] for k, v in job["attacks"].items()},
           "certificate_valid": check["valid"], "signer": check["fingerprint"],
           "paid_generation": {"revenue_cents": paid["revenue_cents"], "owners_paid": len(paid["payouts"]),
                               "finwave_studios_cents": studio_cents}, "serve": serve}
    metrics = {"owners / works registered": f"{res['owners']} / {res['works']}",
               f"opt-out: {SERVICE_OWNER} -> erase {SERVICE_CONCEPT!r}": status["status"],
               "audit verdict (plain prompts)": row["verdict"],
               "certificate's verdict (with attacks)": check["standing"]["verdict"], "target_erased (95% interval)":
                   f"{row['target_erased']} {row['target_erased_ci']}",
               "attack success (udatk / ti / paraphrase)": " / ".join(f"{v:.2f}" for v in res["attacks"].values()),
               "certificate": f"signed (Ed25519, {check['fingerprint']}); verifies against the ledger's published key "
                              f"and the edited weights: {check['valid']}",
               "paid generation": f"4 cents split among {len(paid['payouts'])} owners; {SERVICE_OWNER}: {studio_cents}",
               "open the page": serve}
    section = {"title": title, "metrics": metrics,
               "text": ("The ledger (ledger.db) registers every training image with its owner and content hashes. "
                        f"{SERVICE_OWNER} opts out of {SERVICE_CONCEPT}; processing erases it with Concept Ablation, "
                        "audits the edit on held-out prompts and under three attacks, and signs a certificate "
                        "(certificate-1.json; `datarights ledger verify-certificate certificate-1.json --public-key "
                        f"{ledger.public_key()} --model ledger-models/job-{job['id']}` checks it offline against the "
                        "ledger's published key). The image "
                        "generated above is recorded as a paid generation: 4 cents, split by owner shares in whole "
                        "cents. The tokens to sign in are printed once, in the command's log.")}
    return res, section
