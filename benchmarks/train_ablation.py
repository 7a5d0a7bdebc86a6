#!/usr/bin/env python3
"""What each part of the training recipe contributes, at equal compute; writes benchmarks/results/train_ablation.*

Three runs from scratch on the CelebA training pack with the same network (GhostFaceNet w1.0, stride-2 stem),
seed, schedule, batch and augmentation; only the losses differ:

- ``margin``: CosFace (s=64, m=0.35) over the identities with two or more faces;
- ``distill``: cosine distillation to the centred dlib teacher on every face (weight 80), no margin loss;
- ``both``: the two together (the shipped model's recipe).

Each run is scored on the pack's dev pairs (never LFW) and then, with its final weights, on LFW through the
full pipeline (``facegnet eval lfw``, detections cached). Runs already finished in ``--work`` are reused, so an
interrupted ablation resumes.

    python benchmarks/train_ablation.py [--steps 152] [--threads 2] [--work runs/ablation]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPES: dict[str, list[str]] = {
    "margin": ["--head", "cosface", "--distill", "none"],
    "distill": ["--head", "none", "--distill", "cosine", "--distill-weight", "80"],
    "both": ["--head", "cosface", "--distill", "cosine", "--distill-weight", "80"],
}
DESCRIPTION = {
    "margin": "CosFace only",
    "distill": "distillation to dlib only",
    "both": "CosFace + distillation",
}


def common_options(args: argparse.Namespace) -> list[str]:
    """Everything but the losses: the shipped recipe's optimiser, schedule and augmentation."""
    return ["--data", str(args.data), "--cache", str(args.cache), "--threads", str(args.threads),
            "--steps", str(args.steps), "--batch-size", "128", "--lr", "0.1", "--warmup-steps", str(args.warmup),
            "--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "5e-4", "--clip-grad", "5",
            "--scale", "64", "--margin", "0.35", "--flip", "0.5", "--colour", "0.2", "--grayscale", "0.05",
            "--blur", "0.05", "--lowres", "0.1", "--checkpoint-every", "0", "--log-every", "10",
            "--seed", "0", "--no-progress"]


def run(command: list[str], log: Path) -> None:
    with open(log, "a") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        sys.exit(f"train_ablation: {' '.join(command[:4])} … failed (exit {code}); see {log}")


def last_dev(run_dir: Path) -> tuple[dict, float]:
    """The run's final dev scores and its training minutes."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    dev = [r for r in records if r.get("event") == "dev"][-1]
    minutes = max(r.get("elapsed_min", 0.0) for r in records)
    return dev, minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    parser.add_argument("--work", type=Path, default=Path("runs/ablation"), help="run folders (not committed)")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"), help="decoded-crop cache")
    parser.add_argument("--detection-cache", type=Path, default=Path("runs/lfw_detections.sqlite"))
    parser.add_argument("--steps", type=int, default=152, help="steps of 128 faces per run (152: one epoch)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "train_ablation")
    args = parser.parse_args()
    python = sys.executable
    rows = {}
    for name in args.recipes.split(","):
        folder = args.work / name
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "console.log"
        if not (folder / "last.pt").exists():
            run([python, "-m", "facegnet", "train", "--out", str(folder), *RECIPES[name], *common_options(args)], log)
        card = args.work / "weights" / f"{name}.json"
        if not card.exists():
            run([python, "-m", "facegnet.train.release", str(folder / "last.pt"), "--name", name, "--out-dir",
                 str(card.parent), "--far", "1e-2", "--identify-far", "0"], log)
        report = folder / "lfw.json"
        if not report.exists():
            run([python, "-m", "facegnet", "eval", "lfw", "--data", str(args.lfw), "--weights", str(card),
                 "--detection-cache", str(args.detection_cache), "--json", str(report), "--quiet"], log)
        dev, minutes = last_dev(folder)
        lfw = json.loads(report.read_text())
        rows[name] = {
            "recipe": DESCRIPTION[name], "options": RECIPES[name], "steps": dev["step"],
            "epochs": dev["epoch"], "train_minutes": round(minutes, 1),
            "dev_accuracy": dev["accuracy"], "dev_auc": dev["auc"], "dev_tar@far1e-2": dev["tar@far1e-2"],
            "lfw_accuracy": round(lfw["accuracy"], 4), "lfw_std": round(lfw["accuracy_std"], 4),
            "lfw_auc": round(lfw["auc"], 4), "lfw_tar@far1e-2": round(lfw["tar@far=0.01"], 4),
        }
    result = {
        "command": "python benchmarks/train_ablation.py" + (f" --steps {args.steps}" if args.steps != 152 else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "protocol": (f"from scratch, {args.steps} steps × 128 faces of the CelebA pack, same seed/schedule/"
                     "augmentation (lr 0.1 cosine, SGD); dev = the pack's 6,000 dev pairs; LFW = facegnet eval lfw "
                     "(full pipeline, 10 folds)"),
        "common_options": common_options(args),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Training ablation ({result['date']})", "", f"Command: `{result['command']}`. {result['protocol']}.",
             "", "| recipe | steps | minutes | dev accuracy | dev AUC | dev TAR@FAR1e-2 | LFW accuracy | LFW AUC |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows.values():
        lines.append(f"| {row['recipe']} | {row['steps']} | {row['train_minutes']} | {100 * row['dev_accuracy']:.2f}% | "
                     f"{row['dev_auc']:.4f} | {100 * row['dev_tar@far1e-2']:.2f}% | {100 * row['lfw_accuracy']:.2f}% "
                     f"± {100 * row['lfw_std']:.2f} | {row['lfw_auc']:.4f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
