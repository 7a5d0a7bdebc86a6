#!/usr/bin/env python3
"""Training throughput (images/s) on this CPU for each GhostNet face variant, fp32 and bfloat16 autocast.

One training step = forward, CosFace over 3,074 identities + cosine distillation to a 128-d teacher, backward,
SGD update, channels-last, on random 112×112 batches (augmentation and data loading excluded: they cost under
2% of a step). Writes benchmarks/results/train_throughput.json.

    python benchmarks/train_throughput.py [--threads 2] [--batch 64] [--steps 6] [--warmup 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from facegnet.models import FACE_VARIANTS, ghostfacenet
from facegnet.train.distill import TeacherDistill
from facegnet.train.trainer import TrainConfig, TrainModule, param_groups
from facegnet.models.heads import build_head

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
# A Python process running `facegnet train` or `eval` (module or console script), not a shell line naming them.
BUSY_PROCESS = r"python[0-9.]* (-m facegnet|[^ ]*/facegnet) (train|eval)"


def measure(variant: dict, bf16: bool, batch: int, steps: int, warmup: int, channels_last: bool = True) -> float:
    """Images per second of full training steps."""
    torch.manual_seed(0)
    module = TrainModule(ghostfacenet(**variant), build_head("cosface", 512, 3074), TeacherDistill(512, 128))
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    module.train()
    opt = torch.optim.SGD(param_groups(module, 5e-4), lr=0.01, momentum=0.9)
    cfg = TrainConfig(distill_weight=10.0)
    x = torch.randn(batch, 3, 112, 112)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 3074, (batch,))
    teacher = torch.randn(batch, 128)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = module(x, labels, teacher, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return batch / times[len(times) // 2]  # median step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=list(FACE_VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    others = subprocess.run(["pgrep", "-f", BUSY_PROCESS], capture_output=True, text=True).stdout.split()
    rows = []
    for name in args.variants:
        for bf16 in (False, True):
            ips = measure(FACE_VARIANTS[name], bf16, args.batch, args.steps, args.warmup)
            rows.append({"variant": name, "config": FACE_VARIANTS[name], "bf16": bf16, "images_per_s": round(ips, 1)})
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "what": "training images/s (forward + CosFace + distillation + backward + SGD), median step",
        "batch": args.batch, "steps": args.steps, "threads": args.threads, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "load_average_at_start": load_at_start,
        "other_facegnet_processes": len(others),
        "note": ("another facegnet training/eval process was running: figures are pessimistic" if others
                 else "no other facegnet process was running"),
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
