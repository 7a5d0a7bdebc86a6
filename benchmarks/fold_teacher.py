#!/usr/bin/env python3
"""Dev-pair scores of a checkpoint with its online teacher projection folded in at several weights.

`python -m facegnet.train.release CHECKPOINT --fold-teacher W` ships one weight; this shows what the choice does:
weight 0 is the checkpoint as trained, and each other weight w folds ``L = (I + (w·k)²WᵀW)^½`` into a fresh copy
(facegnet.train.fold; scale and statistics from the same 4,096 training faces export uses, loaded once). Scores
are the dev pairs' (never LFW), embedded as the trainer's evaluation does (flip TTA). Writes
benchmarks/results/fold_teacher.json.

    python benchmarks/fold_teacher.py runs/NAME/last.pt --weights 0,0.5,1,1.5,2
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from facegnet.errors import (
    DataError,  # noqa: E402
    one_line_errors,  # noqa: E402
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--weights", default="0,0.5,1,1.5,2", help="comma-separated fold weights (0: unfolded)")
    parser.add_argument("--out", default=str(HERE / "results" / "fold_teacher.json"))
    args = parser.parse_args(argv)

    def run() -> int:
        from facegnet.torch_files import load_pt
        from facegnet.train.config import TrainConfig
        from facegnet.train.datasets import load_dev
        from facegnet.train.evaluate import evaluate_pairs
        from facegnet.train.fold import (
            check_weight,
            fold_faces,
            fold_teacher,
            online_projection,
        )
        from facegnet.train.setup import build_net

        try:
            weights = [float(w) for w in args.weights.split(",") if w.strip()]
        except ValueError:
            raise DataError(f"--weights wants comma-separated numbers, not {args.weights!r}") from None
        for weight in weights:
            if weight:  # 0 is the checkpoint unfolded
                check_weight(weight)
        torch.set_num_threads(2)
        state = load_pt(args.checkpoint, "checkpoint")
        projection = online_projection(state, Path(args.checkpoint))
        cfg = TrainConfig.from_dict(state["config"], args.checkpoint)
        dev = load_dev(cfg, Path(cfg.data) / "dev_pairs.csv")
        faces = fold_faces(cfg)  # loaded once for every weight
        rows = []
        for weight in weights:
            net = build_net(cfg.model)
            net.load_state_dict(state["model"])
            net.eval()
            fold = fold_teacher(net, projection, faces, weight) if weight else None
            scores = evaluate_pairs(net, *dev)
            rows.append({"weight": weight, **({"scale": fold["scale"]} if fold else {}), **scores})
            print(f"weight {weight:g}: dev accuracy {scores['accuracy']:.2%}, 10-fold {scores['accuracy_10fold']:.2%}, "
                  f"AUC {scores['auc']:.4f}, TAR {scores['tar@far1e-2']:.1%} / {scores['tar@far1e-3']:.1%} "
                  f"@ FAR 1e-2 / 1e-3", flush=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "step": state.get("step"), "rows": rows},
                                  indent=2) + "\n")
        return 0

    return one_line_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
