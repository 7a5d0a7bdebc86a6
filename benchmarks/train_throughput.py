#!/usr/bin/env python3
"""Training throughput (images/s) on this CPU for each GhostNet face variant, fp32 and bfloat16 autocast, and
with ``--compile`` each of them also under torch.compile (``facegnet train --compile``), in the same run.

One training step = forward, CosFace over 3,074 identities + cosine distillation to a 128-d teacher, backward,
SGD update, channels-last, on random 112×112 batches (augmentation and data loading excluded: they cost under
2% of a step). Writes benchmarks/results/train_throughput.json.

    python benchmarks/train_throughput.py [--threads 2] [--batch 64] [--steps 6] [--warmup 2] [--compile]
        [--variants ghostfacenet-w1.0-s2] [--no-bf16] [--out benchmarks/results/train_compile.json]
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
from facegnet.models.heads import build_head
from facegnet.train.config import TrainConfig
from facegnet.train.distill import TeacherDistill
from facegnet.train.setup import param_groups
from facegnet.train.module import TrainModule

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
# A Python process running `facegnet train` or `eval` (module or console script), not a shell line naming them.
BUSY_PROCESS = r"python[0-9.]* (-m facegnet|[^ ]*/facegnet) (train|eval)"


def measure(variant: dict, bf16: bool, batch: int, steps: int, warmup: int, channels_last: bool = True,
            compile: bool = False) -> tuple[float, float]:
    """Images per second of full training steps (median step), and the seconds of the first step (compilation
    included when ``compile``)."""
    torch.manual_seed(0)
    module = TrainModule(ghostfacenet(**variant), build_head("cosface", 512, 3074), TeacherDistill(512, 128))
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    module.train()
    if compile:
        module.net.compile()  # as the trainer does: in place, the network only
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
        if i == 0:
            first = time.perf_counter() - t0
    times.sort()
    return batch / times[len(times) // 2], first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=list(FACE_VARIANTS))
    parser.add_argument("--compile", action="store_true", help="also measure each precision under torch.compile")
    parser.add_argument("--no-bf16", action="store_true", help="skip bfloat16 autocast")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS.name})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    others = subprocess.run(["pgrep", "-f", BUSY_PROCESS], capture_output=True, text=True).stdout.split()
    rows = []
    for name in args.variants:
        precisions = [False] if args.no_bf16 else [False, True]
        modes = [(bf16, compiled) for bf16 in precisions for compiled in ([False, True] if args.compile else [False])]
        for bf16, compiled in modes:
            ips, first = measure(FACE_VARIANTS[name], bf16, args.batch, args.steps, max(2, args.warmup) if compiled
                                 else args.warmup, compile=compiled)
            rows.append({"variant": name, "config": FACE_VARIANTS[name], "bf16": bf16, "compile": compiled,
                         "images_per_s": round(ips, 1), "first_step_s": round(first, 1)})
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
