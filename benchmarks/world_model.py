"""World-model figures: training and sampling throughput, `generate` wall time, `eval-model`, and how the
model reproduces provenance (generic prompts: signatures, styles, characters and scenes the judge reads,
their frequencies against training, the memorized scenes' copy rate by dose).

    python benchmarks/world_model.py [--model DIR] [--out benchmarks/results/world_model.json]

Run it alone on the machine (2 cores oversubscribe badly). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from datarights.models import load_model
from datarights.quality import eval_model, public
from datarights.runtime import diffusion_loss
from datarights.train import precompute_text_states
from datarights.world import WorldConfig, make_world


def train_throughput(model, steps: int = 20, batch: int = 128) -> float:
    images, metas = make_world(WorldConfig(preset="tiny", n_images=512, seed=5))
    x = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
    states, idx = precompute_text_states(model, [m["text"] for m in metas])
    model.unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.unet.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        b = torch.randint(0, len(x), (batch,), generator=g)
        loss = diffusion_loss(model, x[b], states[idx[b]], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    model.eval()
    return steps * batch / dt


def sample_throughput(model, n: int, steps: int = 25) -> float:
    prompts = ["a red grumpy face in Ada Vell style"] * n
    model.sample(prompts[:4], steps=2)
    t0 = time.perf_counter()
    model.sample(prompts, steps=steps)
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default="benchmarks/results/world_model.json")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--provenance-n", type=int, default=1024, help="generic-prompt generations of the provenance check")
    ap.add_argument("--data", default=None, help="the model's training world (default: the default world)")
    args = ap.parse_args()
    model = load_model(args.model)
    res = {"machine": f"{platform.machine()} {torch.get_num_threads()} threads", "torch": torch.__version__,
           "params_unet": sum(p.numel() for p in model.unet.parameters())}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "datarights.cli", "generate", "a red grumpy face", "--n", "16", "--seed", "0",
           "--out", "/tmp/bench_grid.png"] + (["--model", args.model] if args.model else [])
    subprocess.run(cmd, check=True, capture_output=True)
    res["generate_16_wall_s"] = round(time.perf_counter() - t0, 2)
    res["sample_img_per_s_batch16"] = round(sample_throughput(model, 16), 1)
    res["sample_img_per_s_batch200"] = round(sample_throughput(model, 200), 1)
    res["train_img_per_s_batch128"] = round(train_throughput(load_model(args.model)), 1)
    res["eval_model"] = public(eval_model(model, n=args.n, seed=0))
    if not args.model or args.data:
        from datarights.attribute import default_world
        from datarights.evaluate.provenance import reproduction
        from datarights.judge import load_judge
        res["provenance"] = public(reproduction(model, load_judge(), args.data or default_world(), n=args.provenance_n,
                                                seed=0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
