"""What a run trains: the embedding network with its margin head and distillation projections in one module
(:class:`TrainModule`, so one DDP wrapper syncs them all), its optimiser and schedule, the weight average, and
the warm start of the parts a fine-tune adds."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from facegnet.errors import DataError
from facegnet.models.heads import build_head
from facegnet.train import datasets as D
from facegnet.train.config import TrainConfig
from facegnet.train.distill import TeacherDistill
from facegnet.train.setup import lr_lambda, param_groups
from facegnet.train.teacher import OnlineTeacher


class TrainModule(nn.Module):
    """Embedding network + margin head + distillation projections (stored teacher, online teacher, stored view
    targets of a second teacher), so one DDP wrapper syncs them all."""

    def __init__(self, net: nn.Module, head: nn.Module | None, distill: TeacherDistill | None,
                 online: TeacherDistill | None = None, views: TeacherDistill | None = None) -> None:
        super().__init__()
        self.net, self.head, self.distill, self.online, self.views = net, head, distill, online, views

    def forward(self, x: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None, cfg: TrainConfig,
                online: torch.Tensor | None = None, views: torch.Tensor | None = None):
        emb = self.net(x)
        losses: dict[str, torch.Tensor] = {}
        total = emb.new_zeros(())
        if self.head is not None:
            losses["margin"] = self.head.loss(emb, labels)
            total = total + cfg.margin_weight * losses["margin"]
        if self.distill is not None and teacher is not None:
            losses["distill"] = self.distill(emb, teacher)
            total = total + cfg.distill_weight * losses["distill"]
        if self.online is not None and online is not None:
            # A second projection, not one onto the concatenated targets: rows a stored teacher cannot describe
            # (mixed faces, unlabelled sources) still learn from the online one.
            losses["online"] = self.online(emb, online)
            total = total + cfg.teacher_weight * losses["online"]
        if self.views is not None and views is not None:
            # Its own projection too: the second teacher's space (SFace, 128-d) is not the first's.
            losses["views"] = self.views(emb, views)
            total = total + cfg.view_targets_weight * losses["views"]
        return total, losses


def build_optimiser(cfg: TrainConfig, module: nn.Module, total: int):
    """SGD (or AdamW) without weight decay on ≤1-d parameters, and its warm-up + cosine schedule over ``total``."""
    groups = param_groups(module, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=False)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))


def build_average(cfg: TrainConfig, module: TrainModule) -> torch.optim.swa_utils.AveragedModel | None:
    """The weight average (``cfg.ema``), then ``torch.compile`` of the network when asked (in this order)."""
    # The average follows the embedding network only (heads are not exported); BatchNorm statistics are averaged
    # too (use_buffers), so the averaged network can be evaluated as it is.
    ema = (torch.optim.swa_utils.AveragedModel(module.net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
        cfg.ema), use_buffers=True) if cfg.ema > 0 else None)
    if cfg.compile:
        # In place, after the average copied the network: parameter names (checkpoints, exports) stay the same, and
        # the averaged copy that dev evaluation uses runs eagerly (no second graph for eval mode).
        module.net.compile()
    return ema


def build_module(cfg: TrainConfig, net: nn.Module, faces: D.FaceSet, teacher_net: OnlineTeacher | None,
            fresh_mean: bool, view_targets: np.ndarray | None = None) -> TrainModule:
    """The network with its margin head and distillation projections (stored teacher, online teacher, stored view
    targets: (N, views, D), centred on their mean over the run's faces)."""
    emb_size = int(cfg.model.get("embedding_size", 512))
    head = None
    if cfg.head != "none":
        if faces.num_classes < 2:
            raise DataError(f"a margin loss needs ≥2 identities with ≥{cfg.min_faces} faces", cfg.data)
        head = build_head(cfg.head, emb_size, faces.num_classes, cfg.scale, cfg.margin)
    distill = None
    if D.uses_stored_teacher(cfg):
        distill = TeacherDistill(emb_size, faces.teacher.shape[1], cfg.distill, D.pack_teacher_mean(cfg.data, cfg.teacher))
    online = None
    if teacher_net is not None:
        # Centre on the teacher's mean over a fixed sample (restored from the checkpoint on resume).
        mean = teacher_net.mean_embedding(faces.images, seed=cfg.seed) if fresh_mean else None
        online = TeacherDistill(emb_size, teacher_net.dim, cfg.distill, mean)
    views = None
    if view_targets is not None:
        flat = view_targets.reshape(-1, view_targets.shape[-1])
        mean = flat[~np.isnan(flat).any(axis=1)].astype(np.float64).mean(axis=0).astype(np.float32)
        views = TeacherDistill(emb_size, view_targets.shape[-1], cfg.distill, mean)
    return TrainModule(net, head, distill, online, views)


def warm_start(module: TrainModule, faces: D.FaceSet, teacher_net: OnlineTeacher | None, cfg: TrainConfig,
                restored: list[str], view_targets: np.ndarray | None = None) -> dict[str, Any]:
    """Fit the parts not restored from ``cfg.init`` to the starting network (see :mod:`facegnet.train.warmstart`)."""
    if not cfg.warm_start:
        return {}
    from facegnet.train import warmstart as W

    done: dict[str, Any] = {}
    sample = W.sample_index(len(faces), 4096, cfg.seed)
    if module.distill is not None and "distill" not in restored and faces.teacher is not None:
        done["distill_cos"] = round(W.fit_projection(module.distill, module.net, faces.images[sample],
                                                     faces.teacher[sample]), 4)
    if module.online is not None and "online" not in restored and teacher_net is not None:
        def embed(images: np.ndarray) -> torch.Tensor:
            return torch.cat([teacher_net(D.to_input(torch.from_numpy(images[i:i + 256]))).cpu()
                              for i in range(0, len(images), 256)])

        done["online_cos"] = round(W.fit_projection(module.online, module.net, faces.images[sample], embed), 4)
    if module.views is not None and "views" not in restored and view_targets is not None:
        # the unmirrored crops of the sample against the first stored view (the crop)
        done["views_cos"] = round(W.fit_projection(module.views, module.net, faces.images[sample],
                                                   view_targets[sample, 0]), 4)
    if module.head is not None and "head" not in restored:
        done["head_centres"] = W.centre_head(module.head, module.net, faces.images, faces.labels)
    return done
