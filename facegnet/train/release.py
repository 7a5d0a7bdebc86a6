"""Export a training checkpoint as shippable weights: a plain state_dict plus its model card.

The threshold is calibrated on the dev pairs (never LFW) at a chosen false-accept rate, with the embedder's own
procedure (flip test-time augmentation), so the card's threshold means what the API computes.

    python -m facegnet.train.release runs/main/best.pt --name facegnet-default --far 1e-3

The card's ``impostor_tail`` (what a gallery's per-search default threshold is read from) is not written here:
``benchmarks/calibrate_search_threshold.py --weights CARD --write-card`` adds it, as the release steps in
``docs/training.md`` and ``benchmarks/release_figures.sh`` do; a card without one makes galleries use its fixed
identification threshold.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facegnet.card import WEIGHTS_DIR, ModelCard, read_card_json, sha256_file
from facegnet.errors import DataError, WeightsError, one_line_errors
from facegnet.evaluation.metrics import tar_at_far, threshold_at_far
from facegnet.torch_files import load_pt, save_pt
from facegnet.train import datasets as D
from facegnet.train.config import TrainConfig
from facegnet.train.evaluate import pair_scores
from facegnet.train.fold import fold_checkpoint
from facegnet.train.setup import build_net

LICENCE = "CelebA: non-commercial research only; the weights inherit that restriction"


def licence_of(cfg: TrainConfig) -> str:
    """The weights' licence line: the pack's, plus each extra face source's (known by its folder name, as
    ``facegnet.train.sources`` writes them) and the online teacher's, plus whatever the card beside the
    ``--init`` weights names (weights fine-tuned from others inherit the data those were trained on)."""
    from facegnet.train.sources import SOURCES

    parts = [LICENCE]
    for folder in filter(None, (cfg.extra_data or "").split(",")):
        source = SOURCES.get(Path(folder).name)
        parts.append(f"{source.name} ({source.repository}@{source.commit[:10]}): {source.licence}" if source
                     else f"{Path(folder).name}: licence unknown, check before publishing")
    if cfg.teacher_model:
        parts.append(f"online teacher {Path(cfg.teacher_model).name}: Apache-2.0 (used in training only, not shipped)")
    if cfg.view_targets:
        parts.append(_view_targets_licence(Path(cfg.view_targets)))
    parts += _init_card_licence(cfg)
    # Clauses are "; "-separated (the pack's own line has two): each appears once, in order of first mention.
    clauses = [c.strip() for c in "; ".join(parts).split(";") if c.strip()]
    return "; ".join(dict.fromkeys(clauses))


def _view_targets_licence(folder: Path) -> str:
    """The stored view targets' teacher as ``facegnet.train.teacher_targets`` names it in ``targets.json``
    (model and licence), used in training only."""
    try:
        teacher = json.loads((folder / "targets.json").read_text())["teacher"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"stored targets {folder.name}: teacher and licence unknown, check before publishing"
    return f"stored targets of {teacher}, used in training only, not shipped"


def _init_card_licence(cfg: TrainConfig) -> list[str]:
    """The licence line of the card beside the ``--init`` weights (``x.pt`` → ``x.json``), if there is one."""
    if not cfg.init:
        return []
    try:
        licence = read_card_json(Path(cfg.init).with_suffix(".json"), "licence")["licence"]
    except WeightsError:  # no card beside the weights, or not a card: nothing to inherit
        return []
    return [licence] if isinstance(licence, str) else []


def recipe_of(cfg: TrainConfig) -> dict[str, Any]:
    """The run's configuration as the card records it: everything but where it paused (``stop_at``,
    ``max_minutes``), which belongs to one invocation, not to the recipe."""
    return {**cfg.to_dict(), "stop_at": 0, "max_minutes": 0.0}


def _calibration_embedder(net: torch.nn.Module, cfg: TrainConfig):
    """The API's own embedder (card normalisation, flip TTA) around ``net``, so thresholds mean what it computes."""
    from facegnet.embed import Embedder

    card = ModelCard(name="calibration", config=dict(cfg.model), embedding_size=int(cfg.model.get("embedding_size", 512)))
    return Embedder(card, model=net, flip=True)


def dev_similarities(net: torch.nn.Module, cfg: TrainConfig, pairs: str | Path | None = None):
    """Cosine similarities of the dev pairs as :class:`facegnet.embed.Embedder` computes them, and the truth."""
    pairs_path = Path(pairs) if pairs else Path(cfg.data) / "dev_pairs.csv"
    images, a, b, same = D.load_dev(cfg, pairs_path)
    emb = _calibration_embedder(net, cfg)(images)
    return (emb[a] * emb[b]).sum(1), same


def _round_up(threshold: float, digits: int = 5) -> float:
    """Round a threshold *up* for the card, so that rounding never lets in more false accepts than targeted."""
    return math.ceil(float(threshold) * 10**digits) / 10**digits


def dev_identity_similarities(net: torch.nn.Module, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Similarities of *every* pair of dev faces (different people, same person), as the embedder computes them.

    The pack's 6,000 dev pairs hold only 3,000 impostor pairs, too few to place a threshold at a small FAR; all
    pairs of its ~1,000 dev faces give ~500,000. Empty arrays when the data is not a pack with a dev split.
    """
    root = Path(cfg.data)
    if not D.is_pack(root):  # `facegnet prepare` output has a manifest too, but no dev split
        return np.empty(0), np.empty(0)
    rows = [r for r in D.read_manifest(root) if r["split"] == "dev"]
    if len(rows) < 2:
        return np.empty(0), np.empty(0)
    images = D.decode_crops([root / r["crop"] for r in rows], cache=cfg.cache)
    ids = np.array([r["identity"] for r in rows])
    emb = _calibration_embedder(net, cfg)(images)
    sims = emb @ emb.T
    upper = np.triu_indices(len(rows), k=1)
    same = ids[upper[0]] == ids[upper[1]]
    values = sims[upper]
    return values[~same], values[same]


def export(
    checkpoint: str | Path,
    name: str = "facegnet-default",
    out_dir: str | Path = WEIGHTS_DIR,
    far: float = 1e-3,
    training: dict[str, Any] | None = None,
    half_above_mb: float = 25.0,
    pairs: str | Path | None = None,
    identify_far: float | None = 1e-3,
    fold_teacher: float | None = None,
) -> ModelCard:
    """Write ``<name>.pt`` (fp32 state_dict, fp16 when larger than ``half_above_mb``) and ``<name>.json``.

    ``fold_teacher`` > 0 folds the online teacher's projection into the embedding layer with that weight
    (:mod:`facegnet.train.fold`) before anything is measured, so thresholds and scores are the folded network's;
    None or 0: no fold. The card's ``training.config`` is the run's resolved configuration (its pauses left out),
    what ``facegnet train --config RECIPE --dry-run`` prints for the recipe that made it.
    """
    ckpt_path = Path(checkpoint)
    state = load_pt(ckpt_path, "checkpoint")
    cfg = TrainConfig.from_dict(state["config"], ckpt_path)
    net = build_net(cfg.model)
    net.load_state_dict(state["model"])
    net.eval()
    folded = fold_checkpoint(net, state, cfg, fold_teacher, ckpt_path) if fold_teacher else None
    sims, same = dev_similarities(net, cfg, pairs)
    scores = pair_scores(sims, same)
    threshold = threshold_at_far(sims, same, far)
    identify: dict[str, Any] = {}
    if identify_far:
        impostor, genuine = dev_identity_similarities(net, cfg)
        if impostor.size and genuine.size:
            scores_all = np.r_[impostor, genuine]
            labels_all = np.r_[np.zeros(impostor.size, bool), np.ones(genuine.size, bool)]
            tar, th = tar_at_far(scores_all, labels_all, identify_far)
            identify = {"identify_threshold": _round_up(th), "identify_threshold_far": identify_far,
                        "dev_all_pairs": {"impostor_pairs": int(impostor.size), "genuine_pairs": int(genuine.size),
                                          "tar_at_identify_threshold": round(tar, 5)}}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    size_mb = sum(v.numel() * v.element_size() for v in weights.values()) / 2**20
    if size_mb > half_above_mb:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    pt_path = out_dir / f"{name}.pt"
    save_pt(weights, pt_path)
    model_cfg = {k: v for k, v in cfg.model.items() if k != "input_size"}
    card = ModelCard(
        name=name,
        architecture="ghostfacenet",
        config=model_cfg,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        embedding_size=int(cfg.model.get("embedding_size", 512)),
        threshold=_round_up(threshold),
        threshold_far=far,
        identify_threshold=identify.get("identify_threshold"),
        identify_threshold_far=identify.get("identify_threshold_far"),
        weights_file=pt_path.name,
        sha256=sha256_file(pt_path),
        training={**(training or {}), "config": recipe_of(cfg), "step": state["step"], "dev": scores,
                  "dev_threshold_far": far, "checkpoint": str(ckpt_path),
                  **({"teacher_fold": folded} if folded else {}),
                  **({"dev_all_pairs": identify["dev_all_pairs"]} if identify else {})},
        licence=licence_of(cfg),
        lfw={},
    )
    card.save(out_dir / f"{name}.json")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a training checkpoint as weights + model card.")
    parser.add_argument("checkpoint")
    parser.add_argument("--name", default="facegnet-default")
    parser.add_argument("--out-dir", default=str(WEIGHTS_DIR))
    parser.add_argument("--far", type=float, default=1e-3, help="dev false-accept rate the threshold targets")
    parser.add_argument("--identify-far", type=float, default=1e-3,
                        help="per-comparison dev false-accept rate of the open-set (gallery) threshold; 0: none")
    parser.add_argument("--training", default=None, help="JSON object merged into the card's training field")
    parser.add_argument("--fold-teacher", type=float, default=None, metavar="WEIGHT",
                        help="fold the online teacher's projection into the embedding with this weight "
                             "(1: the student's vector and its projection count alike, as the shipped model); "
                             "default 0: off")
    args = parser.parse_args(argv)

    def run() -> int:
        try:
            training = json.loads(args.training) if args.training else None
        except json.JSONDecodeError as exc:
            raise DataError(f"--training is not JSON ({exc.msg})") from None
        card = export(args.checkpoint, args.name, args.out_dir, args.far, training,
                      identify_far=args.identify_far or None, fold_teacher=args.fold_teacher)
        print(json.dumps(card.to_dict(), indent=2))
        return 0

    return one_line_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
