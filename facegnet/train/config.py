"""The training run's configuration: plain data, importable without torch (the CLI builds its options from it)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from facegnet.card import GHOSTFACENET_DEFAULTS

#: The trainer's default network: the GhostFaceNet defaults (the input size is fixed by the crops).
DEFAULT_MODEL = {k: v for k, v in GHOSTFACENET_DEFAULTS.items() if k != "input_size"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint and in ``config.json``)."""

    data: str = "../shared/data/train"  # the training pack, or a folder of person sub-folders of crops
    out: str = "runs/train"
    model: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MODEL))
    # losses
    head: str = "arcface"  # arcface | cosface | none
    scale: float = 64.0
    margin: float | None = None  # None: the head's default (ArcFace 0.5, CosFace 0.35)
    margin_weight: float = 1.0
    min_faces: int = 2  # identities with fewer faces get no margin loss (distillation only)
    distill: str = "cosine"  # cosine | mse | none
    distill_weight: float = 1.0
    teacher: str = "teacher_dlib.npy"  # stored teacher embeddings inside the pack; "none": no stored teacher
    teacher_model: str | None = None  # an OpenVINO face embedder run online on every augmented batch
    teacher_engine: str = "auto"  # auto (torch on a GPU, OpenVINO on a CPU), openvino or torch
    teacher_weight: float = 1.0  # weight of the online teacher's distillation loss
    relation_weight: float = 0.0  # weight of matching the batch's pairwise cosines to the online teacher's; 0: off
    fold_margin: float = 0.0  # the margin loss sees [e, w·k·We] (the vector `export --fold-teacher w` ships); 0: e
    extra_data: str | None = None  # comma-separated `facegnet prepare` folders of more faces (labels where named)
    # optimisation
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    min_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 200
    steps: int = 0  # 0: epochs × steps per epoch
    epochs: float = 1.0
    batch_size: int = 128  # global batch (split across processes)
    clip_grad: float = 5.0  # max gradient norm; 0 disables
    bf16: bool = False  # bfloat16 autocast (CPU), AMP float16 on GPU
    channels_last: bool = True
    compile: bool = False  # torch.compile the network for training (~4 min to compile cold, then ~1.45x on 2 CPU cores)
    # augmentation
    flip: float = 0.5
    colour: float = 0.0
    grayscale: float = 0.0
    blur: float = 0.0
    lowres: float = 0.0
    jitter: float = 0.0
    erase: float = 0.0
    mixup: float = 0.0  # fraction of rows blended with another face (needs --teacher-model)
    cutmix: float = 0.0  # fraction of rows with a rectangle pasted from another face (needs --teacher-model)
    # bookkeeping
    checkpoint_every: int = 500  # steps; 0: only at the end
    checkpoint_minutes: float = 0.0  # also checkpoint after this many minutes (0: off)
    eval_every: int = 0  # steps between dev evaluations; 0: once per epoch
    dev_pairs: str | None = None  # default: <data>/dev_pairs.csv when it exists; "none": no dev evaluation
    log_every: int = 10
    seed: int = 0
    threads: int = 0  # torch threads; 0 leaves the default
    cache: str | None = None  # folder for the decoded-crop cache (.npy)
    limit: int | None = None  # use only the first N faces (tests)
    # fine-tuning
    init: str | None = None  # weights (.pt state_dict or checkpoint) to start the embedding network from; a trainer
    # checkpoint of the same data also restores its margin head and distillation projection (a warm restart)
    freeze_stages: int = 0  # freeze the stem and this many early body stages
    ema: float = 0.0  # decay of an exponential moving average of the weights (e.g. 0.999); 0: off. When on, dev
    # scores, best.pt and the exported weights are the average's
    warm_start: bool = True  # with init: class centres = identity means, projections = least-squares fits
    device: str = "auto"  # auto | cpu | cuda
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0: no limit
    budget_minutes: float = 0.0  # wall-clock schedule: the cosine follows max(step, time) progress and the run
    # ends at this many minutes of training (exact resume then no longer holds: timing differs)
    stop_at: int = 0  # stop (with a checkpoint) after this step, to be resumed later; 0: run to the end

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
