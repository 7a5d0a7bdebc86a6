"""``facegnet train``: train or fine-tune a GhostNet face model (one process, or many under torchrun).

Examples::

    facegnet train --data ../shared/data/train --out runs/main --head cosface --distill cosine --epochs 20
    facegnet train --out runs/main --resume
    facegnet train --data my_people/ --distill none --init facegnet/weights/facegnet-default.pt \\
        --freeze-stages 5 --epochs 10 --lr 0.01 --out runs/finetune
    torchrun --nproc-per-node 4 -m facegnet train --data ... --out runs/ddp
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import MISSING, fields
from typing import Any

from facegnet.errors import DataError

# Help for each TrainConfig field; fields appear as --kebab-case options.
HELP: dict[str, str] = {
    "data": "training pack (manifest.csv, crops/, teacher) or a folder of person sub-folders of 112×112 crops",
    "out": "run folder: checkpoints (last.pt, best.pt), config.json, log.jsonl",
    "head": "margin loss: arcface, cosface or none",
    "scale": "margin head scale s",
    "margin": "margin m (default: ArcFace 0.5, CosFace 0.35)",
    "margin_weight": "weight of the margin loss",
    "min_faces": "identities with fewer faces get no margin loss (still distilled)",
    "distill": "teacher distillation loss: cosine (centred teacher), mse or none",
    "distill_weight": "weight of the distillation loss",
    "teacher": "stored teacher embeddings file inside the pack (none: no stored teacher)",
    "teacher_model": "OpenVINO face embedder (.xml or its folder) run online on every augmented batch "
                     "(needs pip install 'facegnet[train]')",
    "teacher_engine": "what runs the teacher: auto (PyTorch on a GPU, OpenVINO on a CPU), openvino or torch",
    "teacher_weight": "weight of the online teacher's distillation loss",
    "relation_weight": "weight of relation distillation: every pair's cosine in the batch pulled towards the online "
                       "teacher's (needs --teacher-model; 0: off)",
    "fold_margin": "the margin loss sees the embedding with its online teacher projection at this weight, the "
                   "vector `python -m facegnet.train.release --fold-teacher W` ships (needs --teacher-model; 0: off)",
    "extra_data": "comma-separated folders of more faces made by `facegnet prepare` (unnamed faces: distillation only)",
    "mixup": "fraction of faces blended with another face of the batch (needs --teacher-model)",
    "cutmix": "fraction of faces with a rectangle pasted from another face (needs --teacher-model)",
    "optimizer": "sgd or adamw",
    "lr": "peak learning rate",
    "min_lr": "learning rate at the end of the cosine schedule",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay (not on BatchNorm, PReLU or biases)",
    "warmup_steps": "linear warm-up steps",
    "steps": "total steps (0: --epochs × steps per epoch)",
    "epochs": "passes over the data when --steps is 0",
    "batch_size": "global batch size (split across processes)",
    "clip_grad": "max gradient norm (0: off)",
    "bf16": "bfloat16 autocast on CPU, float16 AMP on GPU",
    "channels_last": "channels-last memory format",
    "compile": "torch.compile the network's training steps (a few minutes to compile; faster afterwards)",
    "flip": "horizontal flip probability",
    "colour": "colour jitter probability",
    "grayscale": "grayscale probability",
    "blur": "Gaussian blur probability",
    "lowres": "low-resolution down-up sampling probability",
    "jitter": "probability of a small random rotation/scale/shift (±10°, ±10%%, ±5%%)",
    "erase": "probability of blanking a random rectangle of 5–25%% of the crop (occlusion)",
    "checkpoint_every": "checkpoint every N steps (0: only at the end)",
    "checkpoint_minutes": "also checkpoint every N minutes (0: off)",
    "eval_every": "dev evaluation every N steps (0: every epoch)",
    "dev_pairs": "dev pairs CSV (default: <data>/dev_pairs.csv; none: no dev evaluation); never LFW",
    "log_every": "JSON-lines log record every N steps",
    "seed": "random seed",
    "threads": "torch CPU threads (0: default)",
    "cache": "folder for a cache of the decoded crops (.npy)",
    "limit": "use only the first N faces (quick checks)",
    "init": "weights to start from (.pt state_dict or checkpoint) for fine-tuning; plain GhostFaceNet weights "
            "into --model ghostfacenet-v2-w1.0-s2 are grown (DFC attention added, same embeddings at step 0)",
    "freeze_stages": "freeze the stem and this many early body stages",
    "ema": "keep an exponential moving average of the weights with this decay (e.g. 0.999; 0: off); dev scores, "
           "best.pt and exports then use the average",
    "warm_start": "with --init, start the margin head at each identity's mean embedding and each distillation "
                  "projection at its least-squares fit (instead of random)",
    "device": "auto, cpu or cuda",
    "max_minutes": "pause with a checkpoint after this many minutes, to --resume later (0: no limit)",
    "budget_minutes": "wall-clock budget: the cosine schedule follows time as well as steps and ends the run here",
    "stop_at": "pause with a checkpoint after this step, to --resume later (0: off)",
}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from facegnet.train.config import TrainConfig

    for f in fields(TrainConfig):
        if f.name == "model":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=HELP.get(f.name))
            continue
        kind = {int: int, float: float}.get(type(default), str)
        if f.name in ("margin",):
            kind = float
        if f.name in ("limit",):
            kind = int
        parser.add_argument(flag, type=kind, default=None, help=f"{HELP.get(f.name, '')} (default: {default})")


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a face model (ArcFace/CosFace + teacher distillation)",
        description="Train a GhostNet face embedding network; run under torchrun for several processes/GPUs.",
    )
    parser.add_argument("--model", default=None,
                        help='builder kwargs of facegnet.models.ghostfacenet as JSON, e.g. \'{"width": 0.5}\', '
                             "or a name from facegnet.models.FACE_VARIANTS")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_options(parser)
    parser.set_defaults(func=run)


AUGMENT_PROBABILITIES = ("flip", "colour", "grayscale", "blur", "lowres", "jitter", "erase", "mixup", "cutmix")


def config_from_args(args: argparse.Namespace):
    """A TrainConfig from parsed arguments (unset options keep the config defaults)."""
    from facegnet.models import FACE_VARIANTS
    from facegnet.train.config import DEFAULT_MODEL, TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
              if f.name != "model" and getattr(args, f.name, None) is not None}
    if args.model:
        if args.model in FACE_VARIANTS:
            extra = FACE_VARIANTS[args.model]
        else:
            try:
                extra = json.loads(args.model)
            except ValueError:
                raise DataError(f"--model is neither a variant ({', '.join(FACE_VARIANTS)}) nor JSON") from None
            if not isinstance(extra, dict):
                raise DataError("--model JSON must be an object of builder keyword arguments")
        values["model"] = {**DEFAULT_MODEL, **extra}
    for key in ("head", "distill", "optimizer", "device", "teacher_engine"):
        if key in values:
            values[key] = values[key].lower()
    checks = {"head": ("arcface", "cosface", "none"), "distill": ("cosine", "mse", "none"),
              "optimizer": ("sgd", "adamw"), "device": ("auto", "cpu", "cuda"),
              "teacher_engine": ("auto", "openvino", "torch")}
    for key, allowed in checks.items():
        if key in values and values[key] not in allowed:
            raise DataError(f"--{key.replace('_', '-')} must be one of {', '.join(allowed)}, not {values[key]!r}")
    for key in AUGMENT_PROBABILITIES:
        if key in values and not 0.0 <= values[key] <= 1.0:
            raise DataError(f"--{key} is a probability: between 0 and 1, not {values[key]}")
    if not 0.0 <= values.get("ema", 0.0) < 1.0:
        raise DataError(f"--ema is a decay: at least 0 (off) and below 1, not {values['ema']}")
    if (values.get("mixup") or values.get("cutmix")) and not values.get("teacher_model"):
        raise DataError("--mixup and --cutmix need --teacher-model: only an online teacher can embed a mixed face")
    if values.get("relation_weight") and not values.get("teacher_model"):
        raise DataError("--relation-weight needs --teacher-model: the relations come from the online teacher")
    if values.get("fold_margin", 0.0) < 0:
        raise DataError(f"--fold-margin is a fold weight: 0 (off) or positive, not {values['fold_margin']:g}")
    if values.get("fold_margin") and not (values.get("teacher_model") and values.get("head", "arcface") != "none"):
        raise DataError("--fold-margin needs --teacher-model and a margin head: it puts the margin loss on the "
                        "embedding with its online teacher projection")
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    """Run the training and print a one-line JSON summary."""
    from facegnet.train.trainer import train

    cfg = config_from_args(args)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    if summary.get("rank", 0) == 0:
        print(json.dumps(summary))
    if summary.get("stopped_by"):
        # Stopped by Ctrl-C or SIGTERM at a step boundary, last.pt written: say how to go on, exit as the signal.
        signum = int(getattr(signal.Signals, summary["stopped_by"]))
        if summary.get("rank", 0) == 0:
            print(f"facegnet train: stopped by {summary['stopped_by']} at step {summary['step']} of {summary['total']}; "
                  f"continue with: facegnet train --out {cfg.out} --resume", file=sys.stderr)
        return 128 + signum
    return 0
