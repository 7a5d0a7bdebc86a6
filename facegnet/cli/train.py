"""``facegnet train``: train or fine-tune a GhostNet face model (one process, or many under torchrun).

Examples::

    facegnet train --config recipes/facegnet-default.toml                  # a 2,971-step fine-tune
    facegnet train --config recipes/facegnet-default.toml --dry-run        # print the resolved configuration
    facegnet train --config recipes/facegnet-default.toml --steps 100 --out runs/quick   # options override it
    facegnet train --out runs/main --resume
    facegnet train --config recipes/patient-trunk.toml --out runs/trunk        # constant rate, resumable
    facegnet train --branch-from runs/trunk/last.pt --out runs/trunk-cool      # a cool-down branch of it: the
                                                                               # shipped model's run
    facegnet train --data my_people/ --distill none --init facegnet/weights/facegnet-default.pt \\
        --freeze-stages 5 --epochs 10 --lr 0.01 --out runs/finetune
    torchrun --nproc-per-node 4 -m facegnet train --config RECIPE --out runs/ddp

Every option of :class:`facegnet.train.config.TrainConfig` is a ``--kebab-case`` option here, with the help text
the configuration carries.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import fields
from typing import Any

from facegnet.errors import DataError


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from facegnet.train.config import TrainConfig, option_type

    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = option_type(f.name)
        default = f.default if kind is not dict else "the shipped network's"
        text = f.metadata["help"].replace("%", "%%")
        if f.metadata.get("choices"):
            text += f" ({', '.join(f.metadata['choices'])})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{text} (default: {str(default).lower()})")
        else:
            parser.add_argument(flag, type=kind if kind in (int, float) else str, default=None,
                                help=f"{text} (default: {default})")


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a face model (ArcFace/CosFace + teacher distillation)",
        description="Train a GhostNet face embedding network from a recipe file and/or options; run under torchrun "
                    "for several processes/GPUs.",
    )
    parser.add_argument("--config", metavar="RECIPE.toml", default=None,
                        help="a recipe: TOML of the options below (snake_case names); options given here override it")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved configuration as JSON and exit without training")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last.pt, with its own configuration")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_options(parser)
    parser.set_defaults(func=run)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration options set on the command line."""
    from facegnet.train.config import TrainConfig

    return {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}


def config_from_args(args: argparse.Namespace):
    """The run's TrainConfig: the defaults, then the recipe file (``--config``), then the options given; with
    ``--resume``, the checkpoint's own configuration with the options a resumed run may change."""
    from facegnet.train.config import TrainConfig, load_recipe

    given = given_options(args)
    if args.resume:
        if args.config:
            raise DataError("--resume continues the run's own configuration; leave out --config")
        from facegnet.train.trainer import resume_config

        return resume_config(given.pop("out", "runs/train"), given)
    if given.get("branch_from") and not args.config:
        from facegnet.train.branch import branch_config

        return branch_config(given.pop("branch_from"), given)  # the trunk's configuration, cooling down
    values = load_recipe(args.config) if args.config else {}
    try:
        return TrainConfig(**{**values, **given})
    except DataError as exc:
        if args.config and exc.source is None and _fails_alone(values, exc.reason):
            raise DataError(exc.reason, args.config) from None  # the recipe's own value: name its file
        raise


def _fails_alone(values: dict[str, Any], reason: str) -> bool:
    """Whether the recipe's options alone fail for ``reason`` (so the file, not an option given, is at fault)."""
    from facegnet.train.config import TrainConfig

    try:
        TrainConfig(**values)
    except DataError as exc:
        return exc.reason == reason
    return False


def run(args: argparse.Namespace) -> int:
    """Run the training and print a one-line JSON summary (or, with ``--dry-run``, the configuration)."""
    cfg = config_from_args(args)
    if args.dry_run:
        print(cfg.to_json())
        return 0
    from facegnet.train.trainer import train

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
