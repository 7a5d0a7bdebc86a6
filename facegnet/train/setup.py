"""What a training run starts from: the network, weights to fine-tune from (and which stages to freeze), the
optimiser's parameter groups and the learning-rate schedule."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from facegnet.errors import WeightsError
from facegnet.torch_files import load_pt
from facegnet.train.config import TrainConfig

__all__ = ["build_net", "freeze_early", "load_init_parts", "load_init_weights", "lr_lambda", "param_groups"]


def build_net(model_cfg: dict[str, Any]) -> nn.Module:
    """The embedding network from the builder kwargs (see :func:`facegnet.models.ghostfacenet`)."""
    from facegnet.models import ghostfacenet

    return ghostfacenet(**model_cfg)


def load_init_weights(net: nn.Module, path: str | Path) -> None:
    """Load a plain state_dict or a trainer checkpoint's embedding network into ``net``."""
    path = Path(path)
    state = load_pt(path, "weights to fine-tune from")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"weights do not fit this architecture ({str(exc).splitlines()[0]})", path) from None


def load_init_parts(module: nn.Module, path: str | Path) -> list[str]:
    """From a trainer checkpoint, also restore the head and distillation projection where their shapes fit.

    Continuing a run with a new schedule (a warm restart) then starts from trained classifier centres instead of
    random ones, which would otherwise pull the embedding about during the first steps. Returns what was restored.
    """
    state = load_pt(path, "weights to fine-tune from")
    saved = state.get("module") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        return []
    restored = []
    for name in ("head", "distill", "online", "views"):
        part = getattr(module, name, None)
        sub = {k[len(name) + 1:]: v for k, v in saved.items() if k.startswith(name + ".")}
        own = part.state_dict() if part is not None else {}
        if sub and own.keys() == sub.keys() and all(own[k].shape == sub[k].shape for k in own):
            part.load_state_dict(sub)
            restored.append(name)
    return restored


def freeze_early(net: nn.Module, stages: int) -> list[str]:
    """Freeze the stem and the first ``stages`` body stages (their BatchNorm statistics too); returns names."""
    if stages <= 0:
        return []
    frozen: list[nn.Module] = []
    names: list[str] = []
    for name in ("stem", "conv_stem", "bn1"):
        if hasattr(net, name):
            frozen.append(getattr(net, name))
            names.append(name)
    body = next((getattr(net, n) for n in ("blocks", "body", "stages") if hasattr(net, n)), None)
    if body is None:
        raise WeightsError("cannot freeze stages: the network has no blocks/body/stages container")
    for i, stage in enumerate(list(body.children())[:stages]):
        frozen.append(stage)
        names.append(f"stage{i}")
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()
        # Keep BatchNorm statistics fixed whenever the network is switched back to train().
        module.train = lambda mode=True, _m=module: _m  # type: ignore[method-assign]
    return names


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices/kernels only: not on BatchNorm, PReLU, biases (all ≤1-d)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    """Linear warm-up to ``lr``, then ``cfg.schedule``: cosine or linear decay to ``min_lr`` at ``total`` steps, or
    constant (as a factor of lr): a function of the step alone, so a resumed run follows the same schedule."""
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    warm = max(0, min(cfg.warmup_steps, total - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        t = min(1.0, (step - warm) / max(1, total - warm))
        shape = 1.0 - t if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * t))
        return floor + (1 - floor) * shape

    return factor
