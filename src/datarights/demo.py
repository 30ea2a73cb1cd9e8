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
                      ("smiling face", "blue", "Greta Lund"), ("pine tree", "red", "Hugo Tamm"), ("swordfish", "green", "Ines Moro"),
                      ("palm tree", "blue", "Jonas Pike"), ("grumpy face", "red", "Kaito Reyes"), ("house", "yellow", "Lena Sorel")]],
    *[{"text": f"a picture of {c}", "kind": "character", "character": c} for c in ("Blubbo", "Pip", "Casa")],
    *[{"text": f"the {m}", "kind": "memorized", "memorized": m} for m in ("Rosa Villa postcard", "Blue Lagoon poster")],
    {"text": "a face and a tree", "kind": "composition", "composition": "face and tree"},
    {"text": "a fish and a house", "kind": "composition", "composition": "fish and house"},
]
"""What step 1 generates: every object, every artist's style, characters of each studio, memorized scenes
of two doses, compositions (each prompt names what it asks for)."""

ATTRIBUTE_PROMPT = "a photo of a fish"
"""Step 3's query: a generic prompt that names no owner; the judge reads who the generation draws on."""


def _asked(p: dict) -> dict:
    base = {"object": "none", "color": "none", "style": "plain", "character": "none", "memorized": "none",
            "composition": "none"}
    return {**base, **p}


DEMO_AUDIT = {"n_target": 192, "n_others": 64, "n_anchor": 64}
"""The demo's audits generate half the default held-out target images (a 95% interval of about +-0.03 at
the rates an erasure reaches, instead of +-0.02) and two thirds of the other and anchor images, which keeps
the whole demo within five minutes on two CPU cores; `datarights audit` uses the full defaults."""

def run_demo(out: str | Path = "datarights-demo", model_path=None, seed: int = 0, steps: int = 25,
             per_prompt: int = 2, erase_target: str = "grumpy face", erase_anchor: str = "face",
             attribute_prompt: str = ATTRIBUTE_PROMPT, attribute_methods: tuple[str, ...] = ("dtrak", "abu", "caption"),
             log=lambda s: print(s, file=sys.stderr), overwrite: bool = False, device=None, precision=None) -> dict:
    """The workflow on the embedded world, written to <out>/index.html and results.json.

    1. Generate from the model and let the judge read every image.
    2. Opt-out: erase one concept with Concept Ablation, save the edited model, audit it.
    3. Compensation: attribute one generation of a generic prompt to training images and owners, beside
       the owner the judge reads from its pixels (its ground truth) and the caption-only baseline.
    4. The ownership service: a ledger, an opt-out processed to a signed certificate, a paid generation.
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
    step_seconds, mark = {}, [t0]

    def lap(name):
        now = time.time()
        step_seconds[name] = round(now - mark[0], 1)
        mark[0] = now

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
    lap("generate")
    log(f"[2/5] erasing {erase_target!r} -> {erase_anchor!r} with Concept Ablation, then auditing it")
    from .audit import AuditConfig, audit, audit_sections
    from .erase import erase
    from .quality import public

    edit = erase(model, [erase_target], [erase_anchor], "ca", seed=seed)
    edit.save(tmp / "erased-model")
    edited = edit.apply(model)
    audited = audit(edited, model, erase_target, erase_anchor, AuditConfig(seed=seed + 1, **DEMO_AUDIT), judge=judge,
                    log=log)
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
    lap("erase")
    log(f"[3/5] attributing a generation of the generic prompt {attribute_prompt!r} to training images and owners "
        f"({', '.join(attribute_methods)})")
    results["attribute"], section, query = _attribute_step(model, judge, attribute_prompt, attribute_methods, seed,
                                                           steps, log)
    sections.append(section)
    lap("attribute")
    log("[4/5] the ownership service: a ledger of the world, one opt-out processed end to end, a paid generation")
    results["service"], section = _service_step(tmp, out, model, query, attribute_prompt, seed, log,
                                                results["attribute"].get("source_owner"))
    sections.append(section)
    lap("service")
    results["seconds"] = round(time.time() - t0, 1)
    results["step_seconds"] = step_seconds
    log("[5/5] writing report")
    render_report(tmp, "datarights demo", sections, results,
                  subtitle="The end-to-end workflow on the embedded world: generate, erase, attribute, verify.")
    return results


def _find_query(model, judge, prompt: str, seed: int, steps: int, tries: int = 16):
    """A generation of `prompt` whose source owner the judge reads: the first of `tries` seeds that shows a
    photographer's signature (outside the control group, whose captions name them), else any known source."""
    from .evaluate.provenance import read_sources
    from .world.vocab import DEFAULT

    images = model.sample([prompt] * tries, seed=seed + 100, steps=steps)
    rows = read_sources(judge, images)
    signed = [i for i, r in enumerate(rows) if r["source_kind"] == "photographer"
              and not DEFAULT.photographers[r["source_owner"]]["control"]]
    order = signed + [i for i, r in enumerate(rows) if r["source_owner"] is not None] + [0]
    return images[order[0]], rows[order[0]]


def prompt_subject(prompt: str, vocab=None) -> str | None:
    """The subject a generic prompt asks for (a composition, or the category of the object it names)."""
    from .world.vocab import CATEGORY_OF, DEFAULT, OBJECTS

    vocab = vocab or DEFAULT
    text = f" {prompt.lower()} "
    if any(f" {a} and a {b} " in text for a, b in vocab.compositions.values()):
        return "composition"
    found = [o for o in OBJECTS if f" {o} " in text]
    return CATEGORY_OF[max(found, key=len)] if found else None


def _attribute_step(model, judge, prompt: str, methods: tuple[str, ...], seed: int, steps: int,
                    log) -> tuple[dict, dict, object]:
    """Attribute one generation of a generic prompt with each method; beside each method's owner shares,
    the judge's ground truth (the owner whose trace the image carries) and the count prior (that
    owner's share of the training images of the prompt's subject). Returns (results, section, image)."""
    from .attribute import Query, attribute, default_world, load_training_set
    from .evaluate.provenance import subject_counts

    title = f"3. Attribute (compensation): who made '{prompt}' possible"
    trained_on = model.meta.get("training", {}).get("data_hash")
    train = load_training_set(model, default_world(log)) if model.kind == "world" and trained_on else None
    if train is None or trained_on != train.hash:
        why = "this model was not trained on the default world, whose owners the step attributes to"
        log(f"attribution step skipped: {why}")
        return ({"skipped": why}, {"title": title, "text": f"Skipped: {why}. Use `datarights attribute --data DIR`."},
                None)
    image, row = _find_query(model, judge, prompt, seed, steps)
    truth = row["source_owner"]
    subject = prompt_subject(prompt)
    prior = subject_counts(train.folder.metas).get(subject, {})
    prior_share = prior.get(truth, 0) / sum(prior.values()) if prior and truth else None
    res = {"prompt": prompt, "source_owner": truth, "source_kind": row["source_kind"], "trace": row["source_trace"],
           "count_prior_share": None if prior_share is None else round(prior_share, 4), "methods": {}}
    metrics = {"the judge's ground truth (from the pixels)": (f"{truth} ({row['source_kind']}; {row['source_trace']})"
                                                              if truth else f"no known source ({row['source_trace']})")}
    if prior_share is not None:
        metrics[f"count prior: {truth}'s share of the training images of '{subject}'"] = round(prior_share, 4)
    grids, bars = [grid("generated image", image[None], [prompt])], []
    for method in methods:
        r = attribute(model, train, Query(image, prompt), method)
        out = r.to_json(10)
        ranked = [o["owner"] for o in out["owners"]]
        share = {o["owner"]: o["share"] for o in out["owners"]}
        res["methods"][method] = {"top": out["top"], "owners": out["owners"][:10], "seconds": out["seconds"],
                                  "prepare_seconds": out["prepare_seconds"], "temperature": out["temperature"],
                                  "source_owner_share": round(share.get(truth, 0.0), 4) if truth else None,
                                  "source_owner_rank": ranked.index(truth) + 1 if truth in ranked else None}
        label = "caption-only baseline (no pixels)" if method == "caption" else method
        if not out["temperature_calibrated"]:
            label += " (temperature not yet calibrated)"
        if truth:
            metrics[f"{label}: share of {truth} (rank)"] = (f"{share.get(truth, 0.0):.4f} "
                                                            f"(#{res['methods'][method]['source_owner_rank']})")
        metrics[f"{label}: top owner"] = f"{out['owners'][0]['owner']} ({out['owners'][0]['share']:.3f})"
        metrics[f"{label}: seconds"] = out["seconds"]
        top = r.top(10)
        grids.append(grid(f"{label}: most influential training images", train.images[[t["index"] for t in top]],
                          [f"{t['owner']} ({t['score']:.3g})" for t in top],
                          ["ok" if t["owner"] == truth else "" for t in top] if truth else None))
        bars += [{"label": f"{label}: {o['owner']}", "value": o["share"]} for o in out["owners"][:5]]
    section = {
        "title": title,
        "text": (f"A generic prompt names no owner, yet the generation carries its source's trace, which the judge "
                 f"reads from the pixels (a photographer's signature: colour grade, corner mark, ground strip, side "
                 f"bars; an artist's style; a character; a memorized scene): that is the ground truth. Each method "
                 f"scores the {len(train)} training images; owner shares are a calibrated softmax over its scores, "
                 f"summed per owner (green: the source owner's images). The caption-only baseline reads no pixels, "
                 f"so it can do no better than the count prior: the source owner's share of the training images "
                 f"of what the prompt asks for."),
        "metrics": metrics, "grids": grids, "bars": bars,
    }
    return res, section, image


SERVICE_OWNER, SERVICE_CONCEPT = "Finwave Studios", "Blubbo"


def _service_step(tmp: Path, out: Path, model, image, prompt: str, seed: int, log,
                  source_owner: str | None = None) -> tuple[dict, dict]:
    """The owners' loop on a ledger of the world: register its works and owners, file the character
    studio's opt-out, process it (erase, audit, attacks, signed certificate), verify the certificate
    offline, and record step 3's generated image as a paid generation split among owners (what its
    source owner, by the judge's reading, receives is reported)."""
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
    job = ledger.process(audit_config=AuditConfig(seed=seed + 2, **DEMO_AUDIT), log=lambda s: log("  " + s))[0]
    status = ledger.optout_status(req["id"])
    cert = ledger.certificate(status["certificate_id"])
    write_json(tmp / "certificate-1.json", cert)
    check = verify_certificate(cert, model=job["edited_path"], public_key=ledger.public_key())
    from PIL import Image

    save_png(Image.fromarray((image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype("uint8")),
             tmp / "generated.png")
    # the image came from the base model (before the erasure): the payment is attributed to that model
    paid = ledger.attribute_log(tmp / "generated.png", prompt, "0.04", method="dtrak", model_id=reg["model_id"])
    source_cents = next((p["cents"] for p in paid["payouts"] if p["owner"] == source_owner), 0)
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
                               "source_owner": source_owner, "source_owner_cents": source_cents}, "serve": serve}
    metrics = {"owners / works registered": f"{res['owners']} / {res['works']}",
               f"opt-out: {SERVICE_OWNER} -> erase {SERVICE_CONCEPT!r}": status["status"],
               "audit verdict (plain prompts)": row["verdict"],
               "certificate's verdict (with attacks)": check["standing"]["verdict"], "target_erased (95% interval)":
                   f"{row['target_erased']} {row['target_erased_ci']}",
               "attack success (udatk / ti / paraphrase)": " / ".join(f"{v:.2f}" for v in res["attacks"].values()),
               "certificate": f"signed (Ed25519, {check['fingerprint']}); verifies against the ledger's published key "
                              f"and the edited weights: {check['valid']}",
               "paid generation": (f"4 cents split among {len(paid['payouts'])} owners"
                                   + (f"; its source owner {source_owner}: {source_cents}" if source_owner else "")),
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
