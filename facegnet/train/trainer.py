"""The face trainer: margin loss (ArcFace / CosFace) and/or teacher distillation on a GhostNet embedding network.

One :class:`TrainConfig` describes a run; :func:`train` executes it in named steps: :func:`build_run` (data,
network, losses, optimiser), :func:`restore` (a checkpoint's state), then per step :func:`train_step`,
:func:`log_step`, :func:`evaluate` and :func:`checkpoint`, and :func:`finish`. The loop is step-based: the sampler
derives each batch from ``(seed, step)``, and a checkpoint holds model, head, projections, optimiser, scheduler,
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegnet.errors import DataError
from facegnet.torch_files import load_pt, save_pt
from facegnet.train import datasets as D
from facegnet.train import module as M
from facegnet.train import runtime as R
from facegnet.train import teacher_targets as VT
from facegnet.train.augment import Augment, mix_batch
from facegnet.train.branch import restore_trunk
from facegnet.train.config import DEFAULT_MODEL, RESUMABLE, TrainConfig
from facegnet.train.evaluate import embed_crops, pair_scores
from facegnet.train.fold import fold_view
from facegnet.train.module import TrainModule
from facegnet.train.sampling import EpochSampler
from facegnet.train.setup import (
    build_net,
    freeze_early,
    load_init_parts,
    load_init_weights,
)
from facegnet.train.teacher import OnlineTeacher

__all__ = ["DEFAULT_MODEL", "Run", "TrainConfig", "TrainModule", "build_run", "checkpoint", "evaluate", "finish",
           "log_step", "open_log", "restore", "resume_config", "train", "train_step"]


@dataclass
class Run:
    """Everything a run holds between steps (built by :func:`build_run`)."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    state: dict[str, Any] | None  # the checkpoint resumed from
    teacher_net: OnlineTeacher | None
    faces: D.FaceSet
    dev: tuple | None
    module: TrainModule
    ddp: nn.Module
    ema: torch.optim.swa_utils.AveragedModel | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator
    augment: Augment
    sampler: Any
    total: int
    frozen: list[str]
    restored: list[str]
    warm: dict[str, Any]
    images: torch.Tensor  # every training crop, uint8 (N, 112, 112, 3)
    labels: torch.Tensor  # class per crop, -1: none
    stored: torch.Tensor | None  # stored teacher rows when the run distils to them
    scaler: torch.amp.GradScaler | None  # float16 AMP on a GPU needs one (bfloat16 on a CPU does not)
    step: int = 0
    lr: float = 0.0  # the learning rate of the step just taken
    best: float = -1.0
    minutes_before: float = 0.0  # training minutes of earlier invocations (a resumed run's)
    history: list[dict[str, Any]] = field(default_factory=list)
    log: IO[str] | None = None
    started: float = field(default_factory=time.time)
    view_targets: torch.Tensor | None = None  # (N, views, D) stored targets of a second teacher (SFace)
    view_flips: np.ndarray | None = None  # which stored view is the mirror image
    view_meta: dict[str, Any] | None = None

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def exported(self) -> nn.Module:
        """The embedding network a checkpoint's "model" holds and dev scores measure: the average when kept."""
        return self.ema.module if self.ema is not None else self.module.net

    def minutes(self) -> float:
        """Training minutes so far, across resumes."""
        return self.minutes_before + (time.time() - self.started) / 60


# ----------------------------------------------------------------------------------------------- the run
def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, return_module: bool = False) -> dict[str, Any]:
    """Run (or resume) a training run; returns a summary (steps, best dev scores; the trained
    :class:`TrainModule` under ``"module"`` when ``return_module``)."""
    run = build_run(cfg, resume)
    restore(run)
    open_log(run)
    bar = None
    if run.rank == 0 and progress:
        from tqdm import tqdm

        bar = tqdm(total=run.total, initial=run.step, unit="step", dynamic_ncols=True)
    window = _Window()
    last_ckpt = time.time()
    run.module.train()  # frozen stages stay in eval mode (see freeze_early)
    stopped_early = False
    stop = R.StopRequest()  # Ctrl-C / SIGTERM: finish the step, write last.pt, return (see the CLI's message)
    with stop:
        while run.step < run.total:
            loss, parts, n, teacher_seconds = train_step(run)
            window.add(n * run.world, teacher_seconds)
            if run.rank == 0 and (run.step % run.cfg.log_every == 0 or run.step == run.total):
                log_step(run, loss, parts, window, bar)
            if bar is not None:
                bar.update(1)
            paused = run.cfg.max_minutes and (time.time() - run.started) / 60 >= run.cfg.max_minutes
            paused = R.any_rank(bool(paused) or stop.requested, run.world, run.device) or run.step == run.cfg.stop_at
            if run.step % _eval_every(run) == 0 or run.step == run.total:
                evaluate(run)
            due = (run.cfg.checkpoint_every and run.step % run.cfg.checkpoint_every == 0) or (
                run.cfg.checkpoint_minutes and time.time() - last_ckpt >= run.cfg.checkpoint_minutes * 60)
            if R.any_rank(bool(due), run.world, run.device) or run.step == run.total or paused:
                checkpoint(run, run.out / "last.pt")
                last_ckpt = time.time()
            if paused:
                stopped_early = True
                break
    if bar is not None:
        bar.close()
    summary = finish(run, stopped_early, stop.name)
    if return_module:
        summary["module"] = run.module
    return summary


def resume_config(out: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The configuration a run in ``out`` resumes with: its checkpoint's own, with ``overrides`` of
    :data:`~facegnet.train.config.RESUMABLE` options (pauses, ``stop_at`` and ``max_minutes``, are not inherited).

    A checkpoint written by an older version loads as :meth:`TrainConfig.from_dict` allows.
    """
    path = Path(out) / "last.pt"
    if not path.exists():
        raise DataError("nothing to resume (no last.pt)", out)
    saved = load_pt(path, "checkpoint")["config"]
    overrides = dict(overrides or {})
    refused = sorted(set(overrides) - set(RESUMABLE))
    if refused:
        raise DataError(f"--{refused[0].replace('_', '-')} cannot change when resuming (a resumed run keeps its own "
                        f"configuration; it may change only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE)})")
    return TrainConfig.from_dict({**saved, "stop_at": 0, "max_minutes": 0.0, "out": str(out), **overrides}, path)


def build_run(cfg: TrainConfig, resume: bool = False) -> Run:
    """Everything a run needs before its first step: device and processes, data, network, losses, optimiser,
    schedule, augmentation and sampler; with ``resume`` the checkpoint to restore (:func:`restore`)."""
    device = R.pick_device(cfg.device)
    if cfg.compile:
        R.require_compiler()
    rank, world = R.setup_distributed(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg, state = _resumed(cfg) if resume else (cfg, None)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)

    teacher_net = None
    if cfg.teacher_model:  # before the data: a wrong path should not wait for thousands of crops to decode
        teacher_net = OnlineTeacher(cfg.teacher_model, threads=cfg.threads, device=device, engine=cfg.teacher_engine)
    faces = D.training_faces(cfg)
    views, view_flips, view_meta = VT.run_targets(cfg, faces) if cfg.view_targets else (None, None, None)
    pairs_path = D.dev_pairs_path(cfg)
    dev = D.load_dev(cfg, pairs_path) if rank == 0 and pairs_path is not None else None

    fresh = cfg.init and state is None
    net = build_net(cfg.model)
    if fresh:
        load_init_weights(net, cfg.init)
    frozen = freeze_early(net, cfg.freeze_stages)
    module = M.build_module(cfg, net, faces, teacher_net, fresh_mean=state is None and not cfg.branch_from,
                            view_targets=views)
    restored = load_init_parts(module, cfg.init) if fresh else []
    warm = M.warm_start(module, faces, teacher_net, cfg, restored, views) if fresh else {}
    module = module.to(device)
    if cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)

    sampler = EpochSampler(len(faces), cfg.batch_size, cfg.seed, rank, world)
    total = cfg.steps or max(1, int(round(cfg.epochs * sampler.steps_per_epoch)))
    opt, sched = M.build_optimiser(cfg, module, total)
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * rank)
    augment = Augment(cfg.flip, cfg.colour, cfg.grayscale, cfg.blur, cfg.lowres, jitter=cfg.jitter, erase=cfg.erase)
    ema = M.build_average(cfg, module)
    ddp = module
    if world > 1:
        ddp = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    stored = torch.from_numpy(faces.teacher) if (module.distill is not None and faces.teacher is not None) else None
    scaler = torch.amp.GradScaler("cuda") if (cfg.bf16 and device.type == "cuda") else None
    return Run(cfg=cfg, device=device, rank=rank, world=world, state=state, teacher_net=teacher_net, faces=faces,
               dev=dev, module=module, ddp=ddp, ema=ema, opt=opt, sched=sched, gen=gen, augment=augment,
               sampler=sampler, total=total, frozen=frozen, restored=restored, warm=warm,
               images=torch.from_numpy(faces.images), labels=torch.from_numpy(faces.labels), stored=stored,
               scaler=scaler, view_targets=None if views is None else torch.from_numpy(views), view_flips=view_flips,
               view_meta=view_meta)


def restore(run: Run) -> None:
    """Load the checkpoint being resumed: weights, average, optimiser, schedule, step, best score and every RNG."""
    state = run.state
    if state is None:
        if run.cfg.branch_from:  # a new cool-down branch: the trunk's weights and momentum, its own schedule
            restore_trunk(run.cfg, run.module, run.ema, run.opt, run.sched)
        return
    run.module.load_state_dict(state["module"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    run.step, run.best = state["step"], state["best"]
    run.minutes_before = state.get("minutes", 0.0)
    rng = state["rng"][run.rank] if isinstance(state["rng"], list) else state["rng"]
    R.set_rng_state(rng, run.gen)


def open_log(run: Run) -> None:
    """Write ``config.json`` and open ``log.jsonl`` with a start (or resume) record (rank 0 only)."""
    run.started = time.time()
    if run.rank != 0:
        return
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "config.json").write_text(run.cfg.to_json() + "\n")
    run.log = open(run.out / "log.jsonl", "a")
    faces, teacher_net = run.faces, run.teacher_net
    _write(run.log, {"event": "resume" if run.state else "start", "step": run.step, "total": run.total,
                     "world": run.world, "faces": len(faces), "labelled": int((faces.labels >= 0).sum()),
                     "classes": faces.num_classes, "frozen": run.frozen, "restored": run.restored,
                     "warm_start": run.warm, "time": time.time(),
                     "teacher_model": str(teacher_net.path) if teacher_net else None,
                     "teacher_sha256": teacher_net.sha256 if teacher_net else None,
                     **({"view_targets_sha256": run.view_meta["teacher_sha256"]} if run.view_meta else {})})


def train_step(run: Run) -> tuple[torch.Tensor, dict[str, torch.Tensor], int, float]:
    """One optimiser step on the batch of ``run.step``; returns the loss, its parts, the batch size on this process
    and the seconds the online teacher took."""
    cfg, device, module = run.cfg, run.device, run.module
    idx = torch.from_numpy(run.sampler.batch(run.step))
    # uint8 crops go to the device first: normalisation, augmentation and mixing run there (on a GPU the host would
    # otherwise be the bottleneck), with random draws from the CPU generator.
    x = D.to_input(run.images[idx].to(device, non_blocking=True))
    x = run.augment(x, run.gen)
    y = run.labels[idx].clone()
    t = run.stored[idx].clone() if run.stored is not None else None
    v = None
    if run.view_targets is not None:  # each view's nearest stored view: the one with the same flip
        nearest = torch.from_numpy(VT.nearest_view(run.augment.flipped.numpy(), run.view_flips))
        v = run.view_targets[idx, nearest]
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixed = mix_batch(x, cfg.mixup, cfg.cutmix, run.gen)
        y[mixed] = -1  # a blend of two faces has no identity; only the online teacher can describe it
        if t is not None:
            t[mixed] = float("nan")
        if v is not None:
            v[mixed] = float("nan")
    tick = time.time()
    o = run.teacher_net(x).to(device) if run.teacher_net is not None else None  # the very views the student sees
    teacher_seconds = time.time() - tick
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = y.to(device)
    t = t.to(device) if t is not None else None
    v = v.to(device) if v is not None else None
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.bf16):
        loss, parts = run.ddp(x, y, t, cfg, o, v)
    run.opt.zero_grad(set_to_none=True)
    scaler = run.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(run.opt)
    else:
        loss.backward()
    if cfg.clip_grad > 0:
        nn.utils.clip_grad_norm_(module.parameters(), cfg.clip_grad)
    if scaler is not None:
        scaler.step(run.opt)
        scaler.update()
    else:
        run.opt.step()
    if run.ema is not None:
        run.ema.update_parameters(module.net)
    run.lr = run.opt.param_groups[0]["lr"]
    run.sched.step()
    run.step += 1
    if not math.isfinite(float(loss.detach())):
        raise FloatingPointError(f"loss became {float(loss)} at step {run.step}")
    return loss, parts, len(idx), teacher_seconds


def log_step(run: Run, loss: torch.Tensor, parts: dict[str, torch.Tensor], window: _Window, bar=None) -> None:
    """A ``log.jsonl`` record of the step just taken: losses, learning rate, images/s since the last record."""
    ips, teacher_share = window.take()
    rec = {"step": run.step, "epoch": round(run.step / run.sampler.steps_per_epoch, 3),
           "loss": round(float(loss.detach()), 5), **{k: round(float(v.detach()), 5) for k, v in parts.items()},
           "lr": run.lr, "img_s": round(ips, 1),
           **({"teacher_share": round(teacher_share, 3)} if run.teacher_net is not None else {}),
           "elapsed_min": round((time.time() - run.started) / 60, 2)}
    _write(run.log, rec)
    if bar is not None:
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{run.lr:.4f}", img_s=f"{ips:.0f}")


def evaluate(run: Run) -> None:
    """Dev-pair scores of the exported network (rank 0), logged; a new best is written to ``best.pt``."""
    if run.dev is not None:
        scores = _dev_scores(run.exported, run.module, run.dev, run.device)
        run.module.train()
        scores = {"step": run.step, "epoch": round(run.step / run.sampler.steps_per_epoch, 3), **scores}
        run.history.append(scores)
        _write(run.log, {"event": "dev", **scores})
        if scores["accuracy"] > run.best:
            run.best = scores["accuracy"]
            checkpoint(run, run.out / "best.pt", gather=False)
    R.barrier(run.world)


def checkpoint(run: Run, path: Path, gather: bool = True) -> None:
    """Write everything :func:`restore` reads (rank 0 writes; every process's RNG state goes in)."""
    if gather:
        R.sync_buffers(run.module, run.world)
    # The best-so-far copy is written by rank 0 alone (only it evaluates), so it keeps rank 0's RNG only.
    rngs = R.gather_rng(run.gen, run.world) if gather else R.rng_state(run.gen)
    if run.rank == 0:
        save_pt({"config": run.cfg.to_dict(), "module": run.module.state_dict(), "model": run.exported.state_dict(),
                 **({"ema": run.ema.state_dict()} if run.ema is not None else {}), "optimizer": run.opt.state_dict(),
                 "scheduler": run.sched.state_dict(), "step": run.step, "best": run.best, "minutes": run.minutes(),
                 "rng": rngs}, path)


def finish(run: Run, stopped_early: bool, stopped_by: str = "") -> dict[str, Any]:
    """Close the run: replicas' buffers synced, the end record logged; returns the summary."""
    R.sync_buffers(run.module, run.world)
    summary = {"event": "end", "step": run.step, "total": run.total, "stopped_early": stopped_early,
               "stopped_by": stopped_by or None, "best_accuracy": run.best if run.best >= 0 else None,
               "wall_min": round((time.time() - run.started) / 60, 2),
               "dev": run.history[-1] if run.history else None}
    if run.rank == 0:
        _write(run.log, summary)
        run.log.close()
    summary["rank"] = run.rank
    return summary


# ----------------------------------------------------------------------------------------------- helpers
def _resumed(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    """The checkpoint in ``cfg.out`` and the run's own configuration from it; only where and how the run executes
    (:data:`~facegnet.train.config.RESUMABLE`) comes from ``cfg``."""
    path = Path(cfg.out) / "last.pt"
    if not path.exists():
        raise DataError("nothing to resume (no last.pt)", cfg.out)
    state = load_pt(path, "checkpoint")
    return TrainConfig.from_dict({**state["config"], **{k: getattr(cfg, k) for k in RESUMABLE}}, path), state


def _dev_scores(net: nn.Module, module: TrainModule, dev, device) -> dict[str, Any]:
    """Dev-pair scores of ``net``; with an online teacher also those of the folded view ``[e, k·We]`` under
    ``"folded"``, what ``python -m facegnet.train.release --fold-teacher 1`` ships (``k`` measured here on the dev
    embeddings, label-free; the export measures it on training faces)."""
    images, a, b, same = dev
    emb = embed_crops(net, images, device)
    scores = pair_scores((emb[a] * emb[b]).sum(1), same)
    if module.online is not None:
        with torch.no_grad():
            view = F.normalize(fold_view(torch.from_numpy(emb).to(device), module.online.proj, 1.0),
                               dim=1).cpu().numpy()
        folded = pair_scores((view[a] * view[b]).sum(1), same)
        scores["folded"] = {k: folded[k] for k in ("accuracy", "accuracy_10fold", "auc", "tar@far1e-2", "tar@far1e-3")}
    return scores


def _eval_every(run: Run) -> int:
    return run.cfg.eval_every or run.sampler.steps_per_epoch


class _Window:
    """Images and online-teacher seconds since the last log record, for images/s and the teacher's share."""

    def __init__(self) -> None:
        self.start, self.images, self.teacher = time.time(), 0, 0.0

    def add(self, images: int, teacher_seconds: float) -> None:
        self.images += images
        self.teacher += teacher_seconds

    def take(self) -> tuple[float, float]:
        now = time.time()
        span = max(1e-9, now - self.start)
        rates = self.images / span, self.teacher / span
        self.start, self.images, self.teacher = now, 0, 0.0
        return rates


def _write(log, record: dict[str, Any]) -> None:
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
