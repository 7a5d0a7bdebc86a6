"""The face trainer: margin loss (ArcFace / CosFace) and/or teacher distillation on a GhostNet embedding network.

One :class:`TrainConfig` describes a run; :func:`train` executes it. The loop is step-based: the sampler
derives each batch from ``(seed, step)``, and a checkpoint holds model, head, projection, optimiser, scheduler,
step, best dev score and every RNG state, so ``resume=True`` continues exactly where a run stopped.

Distributed training uses ``torchrun`` (``WORLD_SIZE``/``RANK`` in the environment): gloo on CPU, NCCL on GPU.
Every process sees the same global batch order and takes its share; DistributedDataParallel averages the
gradients, so replicas stay identical.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegnet.errors import DataError
from facegnet.models.heads import build_head
from facegnet.torch_files import load_pt, save_pt
from facegnet.train import data as D
from facegnet.train import runtime as R
from facegnet.train.config import DEFAULT_MODEL, TrainConfig
from facegnet.train.distill import TeacherDistill, similarity_loss
from facegnet.train.evaluate import embed_crops, pair_scores
from facegnet.train.fold import fold_view
from facegnet.train.setup import build_net, freeze_early, load_init_parts, load_init_weights, lr_lambda, param_groups
from facegnet.train.teacher import OnlineTeacher

__all__ = ["DEFAULT_MODEL", "TrainConfig", "TrainModule", "train"]


class TrainModule(nn.Module):
    """Embedding network + margin head + distillation projections (stored and online teacher), so one DDP
    wrapper syncs them all."""

    def __init__(self, net: nn.Module, head: nn.Module | None, distill: TeacherDistill | None,
                 online: TeacherDistill | None = None) -> None:
        super().__init__()
        self.net, self.head, self.distill, self.online = net, head, distill, online

    def forward(self, x: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None, cfg: TrainConfig,
                online: torch.Tensor | None = None):
        emb = self.net(x)
        losses: dict[str, torch.Tensor] = {}
        total = emb.new_zeros(())
        if self.head is not None:
            # With --fold-margin the margin loss sees what the export will ship: e with its teacher projection.
            seen = fold_view(emb, self.online.proj, cfg.fold_margin) if self.folds(cfg) else emb
            losses["margin"] = self.head.loss(seen, labels)
            total = total + cfg.margin_weight * losses["margin"]
        if self.distill is not None and teacher is not None:
            losses["distill"] = self.distill(emb, teacher)
            total = total + cfg.distill_weight * losses["distill"]
        if self.online is not None and online is not None:
            # A second projection, not one onto the concatenated targets: rows a stored teacher cannot describe
            # (mixed faces, unlabelled sources) still learn from the online one.
            losses["online"] = self.online(emb, online)
            total = total + cfg.teacher_weight * losses["online"]
        if cfg.relation_weight > 0 and online is not None:
            losses["relation"] = similarity_loss(emb, online)
            total = total + cfg.relation_weight * losses["relation"]
        return total, losses

    def folds(self, cfg: TrainConfig) -> bool:
        """Whether the margin loss sees the folded view (``--fold-margin``, which needs the online projection)."""
        return cfg.fold_margin > 0 and self.online is not None


# ----------------------------------------------------------------------------------------------- data
def uses_stored_teacher(cfg: TrainConfig) -> bool:
    """Whether the run distils to stored descriptors (the pack's ``teacher_dlib.npy``)."""
    return cfg.distill != "none" and bool(cfg.teacher) and cfg.teacher.lower() != "none" and D.is_pack(cfg.data)


def load_data(cfg: TrainConfig) -> D.FaceSet:
    """The training faces named by ``cfg.data`` (a pack, or ``facegnet prepare`` output / a folder of crops)
    plus every folder of ``cfg.extra_data``."""
    root = Path(cfg.data)
    if D.is_pack(root):
        teacher = cfg.teacher if uses_stored_teacher(cfg) else None
        faces = D.load_pack(root, "train", cfg.min_faces, teacher=teacher, cache=cfg.cache, limit=cfg.limit)
    else:
        if cfg.distill != "none" and not cfg.teacher_model:
            raise DataError("distillation needs a teacher: this folder has no stored teacher embeddings "
                            "(give --teacher-model, or --distill none)", root)
        faces = D.load_prepared(root, cfg.min_faces, cache=cfg.cache, limit=cfg.limit)
    sets, names = [faces], [root.name or "data"]
    for extra in [e.strip() for e in (cfg.extra_data or "").split(",") if e.strip()]:
        if not cfg.teacher_model and cfg.head == "none":
            raise DataError("extra faces teach only through an online teacher or their names (--teacher-model)", extra)
        sets.append(D.load_prepared(extra, cfg.min_faces, cache=cfg.cache, limit=cfg.limit))
        names.append(Path(extra).name)
    return D.concat(sets, names)


# ----------------------------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, return_module: bool = False) -> dict[str, Any]:
    """Run (or resume) a training run; returns a summary (steps, best dev scores; the trained
    :class:`TrainModule` under ``"module"`` when ``return_module``)."""
    device = R.pick_device(cfg.device)
    if cfg.compile:
        R.require_compiler()
    rank, world = R.setup_distributed(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ckpt_path, best_path = out / "last.pt", out / "best.pt"
    if resume and not ckpt_path.exists():
        raise DataError("nothing to resume (no last.pt)", out)

    state = load_pt(ckpt_path, "checkpoint") if resume else None
    if state is not None:
        cfg = TrainConfig.from_dict({**state["config"], "out": cfg.out, "max_minutes": cfg.max_minutes, "stop_at": cfg.stop_at,
                                     "device": cfg.device, "threads": cfg.threads, "cache": cfg.cache,
                                     "compile": cfg.compile})
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)

    teacher_net = None
    if cfg.teacher_model:  # before the data: a wrong path should not wait for thousands of crops to decode
        if cfg.distill == "none":
            raise DataError("--teacher-model needs a distillation loss (--distill cosine or mse)")
        teacher_net = OnlineTeacher(cfg.teacher_model, threads=cfg.threads, device=device, engine=cfg.teacher_engine)
    faces = load_data(cfg)
    dev = None
    if cfg.dev_pairs != "none":
        pairs_path = Path(cfg.dev_pairs) if cfg.dev_pairs else Path(cfg.data) / "dev_pairs.csv"
        if cfg.dev_pairs and not pairs_path.exists():
            raise DataError("dev pairs file not found", pairs_path)
        dev = _load_dev(cfg, pairs_path) if rank == 0 and pairs_path.exists() else None

    net = build_net(cfg.model)
    if cfg.init and state is None:
        load_init_weights(net, cfg.init)
    frozen = freeze_early(net, cfg.freeze_stages)
    emb_size = int(cfg.model.get("embedding_size", 512))
    head = None
    if cfg.head != "none":
        if faces.num_classes < 2:
            raise DataError(f"a margin loss needs ≥2 identities with ≥{cfg.min_faces} faces", cfg.data)
        # --fold-margin: the head's centres live in the folded view's space, the embedding plus the teacher's.
        head_size = emb_size + (teacher_net.dim if (cfg.fold_margin > 0 and teacher_net is not None) else 0)
        head = build_head(cfg.head, head_size, faces.num_classes, cfg.scale, cfg.margin)
    distill = None
    if uses_stored_teacher(cfg):
        mean = D.pack_teacher_mean(cfg.data, cfg.teacher)
        distill = TeacherDistill(emb_size, faces.teacher.shape[1], cfg.distill, mean)
    online = None
    if teacher_net is not None:
        # Centre on the teacher's mean over a fixed sample (restored from the checkpoint on resume).
        mean = teacher_net.mean_embedding(faces.images, seed=cfg.seed) if state is None else None
        online = TeacherDistill(emb_size, teacher_net.dim, cfg.distill, mean)
    module = TrainModule(net, head, distill, online)
    restored = load_init_parts(module, cfg.init) if (cfg.init and state is None) else []
    warm = _warm_start(module, faces, teacher_net, cfg, restored) if (cfg.init and state is None) else {}
    module = module.to(device)
    if cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)

    sampler = D.EpochSampler(len(faces), cfg.batch_size, cfg.seed, rank, world)
    total = cfg.steps or max(1, int(round(cfg.epochs * sampler.steps_per_epoch)))
    groups = param_groups(module, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=False)
    clock = {"minutes": 0.0}  # training minutes so far (across resumes), for the wall-clock schedule
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total, clock))
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * rank)
    augment = D.Augment(
        cfg.flip, cfg.colour, cfg.grayscale, cfg.blur, cfg.lowres, jitter=cfg.jitter, erase=cfg.erase
    )

    # The average follows the embedding network only (heads are not exported); BatchNorm statistics are averaged
    # too (use_buffers), so the averaged network can be evaluated as it is.
    ema = (torch.optim.swa_utils.AveragedModel(module.net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
        cfg.ema), use_buffers=True) if cfg.ema > 0 else None)
    if cfg.compile:
        # In place, after the average copied the network: parameter names (checkpoints, exports) stay the same, and
        # the averaged copy that dev evaluation uses runs eagerly (no second graph for eval mode).
        module.net.compile()
    step, best, history = 0, -1.0, []
    if state is not None:
        module.load_state_dict(state["module"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, best = state["step"], state["best"]
        clock["minutes"] = state.get("minutes", 0.0)
        rng = state["rng"][rank] if isinstance(state["rng"], list) else state["rng"]
        R.set_rng_state(rng, gen)

    ddp = module
    if world > 1:
        ddp = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    log = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        log = open(out / "log.jsonl", "a")
        _write(log, {"event": "resume" if state else "start", "step": step, "total": total, "world": world,
                     "faces": len(faces), "labelled": int((faces.labels >= 0).sum()), "classes": faces.num_classes,
                     "frozen": frozen, "restored": restored, "warm_start": warm, "time": time.time(),
                     "teacher_model": str(teacher_net.path) if teacher_net else None,
                     "teacher_sha256": teacher_net.sha256 if teacher_net else None})

    def exported() -> nn.Module:
        """The embedding network a checkpoint's "model" holds and dev scores measure: the average when kept."""
        return ema.module if ema is not None else module.net

    def checkpoint(path: Path, gather: bool = True) -> None:
        if gather:
            R.sync_buffers(module, world)
        # The best-so-far copy is written by rank 0 alone (only it evaluates), so it keeps rank 0's RNG only.
        rngs = R.gather_rng(gen, world) if gather else R.rng_state(gen)
        if rank == 0:
            save_pt({"config": asdict(cfg), "module": module.state_dict(), "model": exported().state_dict(),
                          **({"ema": ema.state_dict()} if ema is not None else {}), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict(), "step": step,
                          "best": best, "minutes": clock["minutes"], "rng": rngs}, path)

    images = torch.from_numpy(faces.images)
    labels_all = torch.from_numpy(faces.labels)
    teacher_all = torch.from_numpy(faces.teacher) if (distill is not None and faces.teacher is not None) else None
    eval_every = cfg.eval_every or sampler.steps_per_epoch
    start_time, last_ckpt = time.time(), time.time()
    minutes_before = clock["minutes"]
    seen, window_t, window_n, window_teacher = 0, time.time(), 0, 0.0
    bar = None
    if rank == 0 and progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if (cfg.bf16 and device.type == "cuda") else None
    module.train()  # frozen stages stay in eval mode (see freeze_early)
    stopped_early = False
    stop = R.StopRequest()  # Ctrl-C / SIGTERM: finish the step, write last.pt, return (see the CLI's message)
    with stop:
        while step < total:
            idx = torch.from_numpy(sampler.batch(step))
            # uint8 crops go to the device first: normalisation, augmentation and mixing run there (on a GPU the host
            # would otherwise be the bottleneck), with random draws from the CPU generator.
            x = D.to_input(images[idx].to(device, non_blocking=True))
            x = augment(x, gen)
            y = labels_all[idx].clone()
            t = teacher_all[idx].clone() if teacher_all is not None else None
            if cfg.mixup > 0 or cfg.cutmix > 0:
                mixed = D.mix_batch(x, cfg.mixup, cfg.cutmix, gen)
                y[mixed] = -1  # a blend of two faces has no identity; only the online teacher can describe it
                if t is not None:
                    t[mixed] = float("nan")
            tick = time.time()
            o = teacher_net(x).to(device) if teacher_net is not None else None  # the very views the student sees
            window_teacher += time.time() - tick
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            t = t.to(device) if t is not None else None
            with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.bf16):
                loss, parts = ddp(x, y, t, cfg, o)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if cfg.clip_grad > 0:
                nn.utils.clip_grad_norm_(module.parameters(), cfg.clip_grad)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if ema is not None:
                ema.update_parameters(module.net)
            lr = opt.param_groups[0]["lr"]
            clock["minutes"] = minutes_before + (time.time() - start_time) / 60
            if cfg.budget_minutes > 0:  # every process must agree on the time-driven lr
                clock["minutes"] = R.rank0_value(clock["minutes"], world, device)
            sched.step()
            step += 1
            seen += len(idx) * world
            window_n += len(idx) * world
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"loss became {float(loss)} at step {step}")
            if rank == 0 and (step % cfg.log_every == 0 or step == total):
                now = time.time()
                ips = window_n / max(1e-9, now - window_t)
                teacher_share = window_teacher / max(1e-9, now - window_t)
                window_t, window_n, window_teacher = now, 0, 0.0
                rec = {"step": step, "epoch": round(step / sampler.steps_per_epoch, 3),
                       "loss": round(float(loss.detach()), 5),
                       **{k: round(float(v.detach()), 5) for k, v in parts.items()}, "lr": lr, "img_s": round(ips, 1),
                       **({"teacher_share": round(teacher_share, 3)} if teacher_net is not None else {}),
                       "elapsed_min": round((now - start_time) / 60, 2)}
                _write(log, rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.4f}", img_s=f"{ips:.0f}")
            if bar is not None:
                bar.update(1)
            budget_spent = R.any_rank(cfg.budget_minutes > 0 and clock["minutes"] >= cfg.budget_minutes, world, device)
            paused = cfg.max_minutes and (time.time() - start_time) / 60 >= cfg.max_minutes
            paused = R.any_rank(bool(paused) or stop.requested, world, device) or step == cfg.stop_at
            out_of_time = budget_spent or paused
            if step % eval_every == 0 or step == total or budget_spent:
                if dev is not None:
                    scores = _dev_scores(exported(), module, cfg, dev, device)
                    module.train()
                    scores = {"step": step, "epoch": round(step / sampler.steps_per_epoch, 3), **scores}
                    history.append(scores)
                    _write(log, {"event": "dev", **scores})
                    if scores["accuracy"] > best:
                        best = scores["accuracy"]
                        checkpoint(best_path, gather=False)
                R.barrier(world)
            due = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or (
                cfg.checkpoint_minutes and time.time() - last_ckpt >= cfg.checkpoint_minutes * 60)
            due = R.any_rank(bool(due), world, device)
            if due or step == total or out_of_time:
                checkpoint(ckpt_path)
                last_ckpt = time.time()
            if out_of_time:
                stopped_early = bool(paused)
                break
    if bar is not None:
        bar.close()
    R.sync_buffers(module, world)
    summary = {"event": "end", "step": step, "total": total, "stopped_early": stopped_early,
               "stopped_by": stop.name or None,
               "best_accuracy": best if best >= 0 else None,
               "wall_min": round((time.time() - start_time) / 60, 2), "dev": history[-1] if history else None}
    if rank == 0:
        _write(log, summary)
        log.close()
    summary["rank"] = rank
    if return_module:
        summary["module"] = module
    return summary


def _warm_start(module: TrainModule, faces: D.FaceSet, teacher_net: OnlineTeacher | None, cfg: TrainConfig,
                restored: list[str]) -> dict[str, Any]:
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
    if module.head is not None and "head" not in restored:  # after the projection: a folded head's centres use it
        view = (lambda e: fold_view(e, module.online.proj, cfg.fold_margin)) if module.folds(cfg) else None
        done["head_centres"] = W.centre_head(module.head, module.net, faces.images, faces.labels, view)
    return done


def _dev_scores(net: nn.Module, module: TrainModule, cfg: TrainConfig, dev, device) -> dict[str, Any]:
    """Dev-pair scores of ``net``; with an online teacher also those of the folded view ``[e, w·k·We]`` under
    ``"folded"`` (w: ``--fold-margin``, else 1), what ``export --fold-teacher w`` would ship up to the scale ``k``
    (measured here on the dev embeddings, label-free; the export measures it on training faces)."""
    images, a, b, same = dev
    emb = embed_crops(net, images, device)
    scores = pair_scores((emb[a] * emb[b]).sum(1), same)
    if module.online is not None:
        with torch.no_grad():
            view = F.normalize(fold_view(torch.from_numpy(emb).to(device), module.online.proj,
                                         cfg.fold_margin if cfg.fold_margin > 0 else 1.0), dim=1).cpu().numpy()
        folded = pair_scores((view[a] * view[b]).sum(1), same)
        scores["folded"] = {k: folded[k] for k in ("accuracy", "accuracy_10fold", "auc", "tar@far1e-2", "tar@far1e-3")}
    return scores


def _load_dev(cfg: TrainConfig, pairs_path: Path):
    """Dev crops (uint8) and pair indices for :func:`evaluate_pairs`."""
    pairs = D.read_pairs(pairs_path)
    names = sorted({p for a, b, _ in pairs for p in (a, b)})
    where = {n: i for i, n in enumerate(names)}
    root = pairs_path.parent
    images = D.decode_crops([root / n for n in names], cache=cfg.cache)
    a = np.array([where[p[0]] for p in pairs])
    b = np.array([where[p[1]] for p in pairs])
    same = np.array([p[2] for p in pairs], dtype=bool)
    return images, a, b, same


def _write(log, record: dict[str, Any]) -> None:
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
