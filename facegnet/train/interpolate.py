"""Weight interpolation between a starting network and its fine-tuned copy (WiSE-FT, Wortsman et al. 2022).

A network fine-tuned from another often sits in the same basin; points on the straight line between the two
can beat both (the fine-tuned one forgets less, the start learns more). This scores ``(1 − α)·start + α·tuned``
for several α on the dev pairs (never LFW) and writes the best; when ``TUNED`` is a trainer checkpoint the result
is one too (its config, the interpolated network), so ``python -m facegnet.train.release`` takes it as it is::

    python -m facegnet.train.interpolate facegnet/weights/facegnet-default.pt runs/warm1/best.pt \\
        --alphas 0,0.25,0.5,0.75,1 --out runs/warm1/wise.pt

BatchNorm running statistics are interpolated like the weights; integer buffers come from the tuned network.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from facegnet.errors import DataError, WeightsError, one_line_errors
from facegnet.torch_files import load_pt, save_pt

__all__ = ["interpolate_states", "main"]


def _state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The network's state_dict, and a trainer checkpoint's config and step (None for plain weights)."""
    state = load_pt(path, "weights to interpolate")
    meta = None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        if isinstance(state.get("config"), dict):
            meta = {"config": state["config"], "step": state.get("step", 0)}
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsError("not a state_dict or trainer checkpoint", path)
    return state, meta


def interpolate_states(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                       alpha: float) -> dict[str, torch.Tensor]:
    """``(1 − alpha)·start + alpha·tuned`` for floating-point tensors; other tensors from ``tuned``."""
    if start.keys() != tuned.keys():
        raise WeightsError("the two networks have different layers: not the same architecture")
    out = {}
    for key, value in tuned.items():
        if value.is_floating_point():
            out[key] = torch.lerp(start[key].to(value.dtype), value, float(alpha))
        else:
            out[key] = value.clone()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facegnet.train.interpolate", description=__doc__.split("\n\n")[0])
    parser.add_argument("start", help="the network fine-tuning started from (.pt weights or checkpoint)")
    parser.add_argument("tuned", help="the fine-tuned network (.pt weights or checkpoint)")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="weights of the tuned network to score")
    parser.add_argument("--data", default="../shared/data/train", help="pack whose dev_pairs.csv scores them")
    parser.add_argument("--model", default=None, help="builder kwargs as JSON (default: the trainer's default)")
    parser.add_argument("--cache", default=None, help="decoded-crop cache folder")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the best interpolation here (.pt)")
    args = parser.parse_args(argv)
    return one_line_errors(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from facegnet.train.config import DEFAULT_MODEL, TrainConfig
    from facegnet.train.evaluate import evaluate_pairs
    from facegnet.train.setup import build_net
    from facegnet.train.trainer import _load_dev

    if args.threads:
        torch.set_num_threads(args.threads)
    alphas = [float(a) for a in args.alphas.split(",")]
    (start, _), (tuned, tuned_meta) = _state(args.start), _state(args.tuned)
    model = {**DEFAULT_MODEL, **json.loads(args.model)} if args.model else DEFAULT_MODEL
    cfg = TrainConfig(data=args.data, cache=args.cache, model=model)
    pairs = Path(args.data) / "dev_pairs.csv"
    if not pairs.exists():
        raise DataError("dev pairs not found", pairs)
    dev = _load_dev(cfg, pairs)
    net = build_net(model).eval()
    rows: list[dict[str, Any]] = []
    for alpha in alphas:
        try:
            net.load_state_dict(interpolate_states(start, tuned, alpha))
        except RuntimeError as exc:
            raise WeightsError(f"weights do not fit --model ({str(exc).splitlines()[0]})", args.tuned) from None
        scores = evaluate_pairs(net, *dev)
        rows.append({"alpha": alpha, **scores})
        print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: (r["accuracy"], r["tar@far1e-3"]))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"start": str(args.start), "tuned": str(args.tuned), "best": best, "scores": rows}
        weights = interpolate_states(start, tuned, best["alpha"])
        save_pt(weights if tuned_meta is None else {**tuned_meta, "model": weights, "interpolation": record},
                args.out)
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"best alpha {best['alpha']}: dev {best['accuracy']:.4f} → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
