"""Cool-down branches of a constant-rate trunk: a long run that can stop anywhere and still give a candidate.

A patient run trains a *trunk* at a constant learning rate (``schedule = "constant"``, after its warm-up) for as
long as there is time, resumed after every stop. Whenever a candidate is wanted, a short *branch* starts from the
trunk's latest checkpoint and decays the rate to ``min_lr`` (``schedule = "linear"``, no warm-up); the branch is
exported and scored on dev, and the trunk goes on untouched. A branch takes the trunk's network, heads, weight
average and optimiser state (momentum), not its step, schedule or random state: it is a new run of its own
``steps`` whose configuration is the trunk's apart from the schedule.

    facegnet train --config recipes/patient-trunk.toml --out /work/runs/trunk          # the trunk (resumable)
    facegnet train --branch-from /work/runs/trunk/last.pt --out /work/runs/trunk-cool  # a branch of it
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from facegnet.errors import DataError
from facegnet.torch_files import load_pt
from facegnet.train.config import TrainConfig

__all__ = ["BRANCH_FRACTION", "branch_config", "restore_trunk"]

#: A branch's default length as a fraction of the trunk's steps so far (cool-downs of 10–20% of the constant phase
#: recover most of what a full decay gives: Hägele et al., "Scaling laws and compute-optimal training beyond fixed
#: training durations", 2024).
BRANCH_FRACTION = 0.12


def branch_config(trunk: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The configuration of a cool-down branch of the trunk checkpoint ``trunk``: the trunk's own, decaying linearly
    from its rate to ``min_lr`` with no warm-up over :data:`BRANCH_FRACTION` of the trunk's steps so far (at least
    one), unless ``overrides`` say otherwise; pauses (``stop_at``, ``max_minutes``) are not inherited."""
    path = Path(trunk)
    state = load_pt(path, "trunk checkpoint")
    if not isinstance(state, dict) or "config" not in state or "step" not in state:
        raise DataError("not a training checkpoint (no config or step): give a trunk's last.pt", path)
    saved = dict(state["config"])
    if saved.get("schedule", "cosine") != "constant":
        raise DataError(f"the trunk's schedule is {saved.get('schedule', 'cosine')}, not constant: a branch cools down "
                        "a constant-rate trunk", path)
    steps = max(1, round(BRANCH_FRACTION * int(state["step"])))
    values = {**saved, "schedule": "linear", "warmup_steps": 0, "steps": steps, "init": None,
              "branch_from": str(path), "stop_at": 0, "max_minutes": 0.0, **(overrides or {})}
    return TrainConfig.from_dict(values, path)


def restore_trunk(cfg: TrainConfig, module: torch.nn.Module, ema: torch.nn.Module | None,
                  opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LambdaLR) -> int:
    """Load the trunk ``cfg.branch_from`` into a freshly built branch: network and heads, weight average, optimiser
    state; the branch's own schedule then sets the rate. Returns the trunk's step."""
    path = Path(cfg.branch_from)
    state = load_pt(path, "trunk checkpoint")
    try:
        module.load_state_dict(state["module"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"the trunk does not fit this branch's configuration ({reason})", path) from None
    # The optimiser's saved groups carry the trunk's rate: the branch's schedule starts from its own step 0.
    for group, base, factor in zip(opt.param_groups, sched.base_lrs, [l(0) for l in sched.lr_lambdas]):
        group["initial_lr"] = base
        group["lr"] = base * factor
    return int(state["step"])
