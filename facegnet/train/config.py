"""The training run's configuration: plain data, importable without torch.

:class:`TrainConfig` is the one description of a run. Each field carries its help text (``metadata["help"]``),
from which ``facegnet train`` builds its ``--kebab-case`` options, and :meth:`TrainConfig.validate` (run on
construction) refuses a bad value in one line naming the option, for Python callers as for the CLI.

A recipe is a TOML file of these fields (``recipes/*.toml``; :func:`load_recipe`); command-line options override
it. Configurations written by older versions (a checkpoint's ``config``, ``config.json``) load through
:meth:`TrainConfig.from_dict`, which drops options that no longer exist when they hold their neutral value and
refuses them otherwise.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from facegnet.card import GHOSTFACENET_DEFAULTS
from facegnet.errors import DataError

__all__ = ["DEFAULT_MODEL", "REMOVED", "RESUMABLE", "TrainConfig", "load_recipe", "option_help", "option_type"]

#: The trainer's default network: the GhostFaceNet defaults (the input size is fixed by the crops).
DEFAULT_MODEL = {k: v for k, v in GHOSTFACENET_DEFAULTS.items() if k != "input_size"}

#: Options that existed once and lost in the project's ablations (docs/training.md), with why they went. An old
#: configuration holding one at its neutral value (0, None) loads without it; any other value is refused.
REMOVED: dict[str, str] = {
    "relation_weight": "relation distillation tied the run without it",
    "fold_margin": "a margin loss on the folded view tied folding at export",
    "budget_minutes": "a wall-clock schedule breaks exact resume; give steps",
    "lookalike_neighbours": "batches of look-alike identities did not beat random ones",
}

#: What a resumed run may change: where and how it runs, and when it pauses; everything else is the run's own.
RESUMABLE = ("out", "max_minutes", "stop_at", "device", "threads", "cache", "compile")

PROBABILITIES = ("flip", "colour", "grayscale", "blur", "lowres", "jitter", "erase", "mixup", "cutmix")


def _option(default: Any, help: str, *, choices: tuple[str, ...] | None = None, kind: type | None = None) -> Any:
    """A field with its help text (and allowed values, and its type where the default is None)."""
    metadata = {"help": help, "choices": choices, "kind": kind}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint, in ``config.json`` and in the model
    card's ``training.config``)."""

    # data
    data: str = _option("../shared/data/train", "training pack (manifest.csv, crops/, teacher) or a folder of "
                        "person sub-folders of 112×112 crops")
    out: str = _option("runs/train", "run folder: checkpoints (last.pt, best.pt), config.json, log.jsonl")
    model: dict[str, Any] = _option(DEFAULT_MODEL, "builder keyword arguments of facegnet.models.ghostfacenet "
                                    "(JSON or a TOML table; missing ones take the defaults), or a name from "
                                    "facegnet.models.FACE_VARIANTS")
    extra_data: str | None = _option(None, "comma-separated folders of more faces made by `facegnet prepare` or "
                                     "`python -m facegnet.train.sources`: each named person becomes an identity "
                                     "beside the data's; unnamed faces teach by distillation only", kind=str)
    min_faces: int = _option(2, "identities with fewer faces get no margin loss (still distilled)")
    limit: int | None = _option(None, "use only the first N faces (quick checks)", kind=int)
    cache: str | None = _option(None, "folder for a cache of the decoded crops (.npy)", kind=str)
    # losses
    head: str = _option("arcface", "margin loss", choices=("arcface", "cosface", "none"))
    scale: float = _option(64.0, "margin head scale s")
    margin: float | None = _option(None, "margin m (default: ArcFace 0.5, CosFace 0.35)", kind=float)
    margin_weight: float = _option(1.0, "weight of the margin loss")
    distill: str = _option("cosine", "teacher distillation loss: cosine (centred teacher), mse or none",
                           choices=("cosine", "mse", "none"))
    distill_weight: float = _option(1.0, "weight of the distillation loss to the stored teacher")
    teacher: str = _option("teacher_dlib.npy", "stored teacher embeddings file inside the pack (none: no stored "
                           "teacher)")
    teacher_model: str | None = _option(None, "OpenVINO face embedder (.xml or its folder) run online on every "
                                        "augmented batch (needs pip install 'facegnet[train]')", kind=str)
    teacher_engine: str = _option("auto", "what runs the online teacher: auto (PyTorch on a GPU, OpenVINO on a "
                                  "CPU), openvino or torch", choices=("auto", "openvino", "torch"))
    teacher_weight: float = _option(1.0, "weight of the online teacher's distillation loss")
    view_targets: str | None = _option(None, "folder of a second teacher's stored targets for fixed views of each "
                                       "pack face (python -m facegnet.train.teacher_targets: SFace); each sampled "
                                       "view distils to its nearest fixed view's target; unset: off", kind=str)
    view_targets_weight: float = _option(1.0, "weight of the distillation loss to the stored view targets")
    # optimisation
    optimizer: str = _option("sgd", "optimiser", choices=("sgd", "adamw"))
    lr: float = _option(0.1, "peak learning rate")
    min_lr: float = _option(0.0, "learning rate at the end of the schedule (cosine or linear)")
    schedule: str = _option("cosine", "the learning rate after the warm-up: cosine or linear decay to min_lr at the "
                            "last step, or constant (a trunk to branch cool-downs from: see branch_from)",
                            choices=("cosine", "linear", "constant"))
    branch_from: str | None = _option(None, "the checkpoint (last.pt) of a trunk trained at a constant rate to cool "
                                      "down from: its network, heads, weight average and optimiser state, not its "
                                      "step or schedule (facegnet.train.branch)", kind=str)
    momentum: float = _option(0.9, "SGD momentum")
    weight_decay: float = _option(5e-4, "weight decay (not on BatchNorm, PReLU or biases)")
    warmup_steps: int = _option(200, "linear warm-up steps")
    steps: int = _option(0, "total steps (0: epochs × steps per epoch)")
    epochs: float = _option(1.0, "passes over the data when steps is 0")
    batch_size: int = _option(128, "global batch size (split across processes)")
    clip_grad: float = _option(5.0, "max gradient norm (0: off)")
    bf16: bool = _option(False, "float16 AMP on a GPU (bfloat16 autocast on a CPU, slower than fp32 on the CPUs "
                         "measured)")
    channels_last: bool = _option(True, "channels-last memory format")
    compile: bool = _option(False, "torch.compile the network's training steps (a few minutes to compile; "
                            "faster afterwards)")
    ema: float = _option(0.0, "keep an exponential moving average of the weights with this decay (e.g. 0.999; "
                         "0: off); dev scores, best.pt and exports then use the average")
    # augmentation (probabilities)
    flip: float = _option(0.5, "horizontal flip probability")
    colour: float = _option(0.0, "colour jitter probability")
    grayscale: float = _option(0.0, "grayscale probability")
    blur: float = _option(0.0, "Gaussian blur probability")
    lowres: float = _option(0.0, "low-resolution down-up sampling probability")
    jitter: float = _option(0.0, "probability of a small random rotation/scale/shift (±10°, ±10%, ±5%)")
    erase: float = _option(0.0, "probability of blanking a random rectangle of 5–25% of the crop (occlusion)")
    mixup: float = _option(0.0, "fraction of faces blended with another face of the batch (needs teacher_model)")
    cutmix: float = _option(0.0, "fraction of faces with a rectangle pasted from another face (needs "
                            "teacher_model)")
    # fine-tuning
    init: str | None = _option(None, "weights to start from (.pt state_dict or trainer checkpoint); a checkpoint "
                               "of the same data also restores its margin head and projections", kind=str)
    freeze_stages: int = _option(0, "freeze the stem and this many early body stages")
    warm_start: bool = _option(True, "with init, start the margin head at each identity's mean embedding and each "
                               "distillation projection at its least-squares fit (instead of random)")
    # bookkeeping
    checkpoint_every: int = _option(500, "checkpoint every N steps (0: only at the end)")
    checkpoint_minutes: float = _option(0.0, "also checkpoint every N minutes (0: off)")
    eval_every: int = _option(0, "dev evaluation every N steps (0: every epoch)")
    dev_pairs: str | None = _option(None, "dev pairs CSV (default: <data>/dev_pairs.csv; none: no dev "
                                    "evaluation); never LFW", kind=str)
    log_every: int = _option(10, "JSON-lines log record every N steps")
    seed: int = _option(0, "random seed")
    threads: int = _option(0, "torch CPU threads (0: default)")
    device: str = _option("auto", "where to train", choices=("auto", "cpu", "cuda"))
    max_minutes: float = _option(0.0, "pause with a checkpoint after this many minutes, to resume later (0: off)")
    stop_at: int = _option(0, "pause with a checkpoint after this step, to resume later (0: off)")

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Normalise and check every option; :class:`DataError` in one line naming the first bad one."""
        for f in fields(self):
            setattr(self, f.name, _checked_type(f, getattr(self, f.name)))
        self.model = _resolve_model(self.model)
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices:
                value = getattr(self, f.name).lower()
                if value not in choices:
                    raise DataError(f"{_flag(f.name)} must be one of {', '.join(choices)}, not {value!r}")
                setattr(self, f.name, value)
        for name in PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataError(f"{_flag(name)} is a probability: between 0 and 1, not {getattr(self, name):g}")
        if not 0.0 <= self.ema < 1.0:
            raise DataError(f"--ema is a decay: at least 0 (off) and below 1, not {self.ema:g}")
        if (self.mixup or self.cutmix) and not self.teacher_model:
            raise DataError("--mixup and --cutmix need --teacher-model: only an online teacher can embed a mixed face")
        if self.teacher_model and self.distill == "none":
            raise DataError("--teacher-model needs a distillation loss (--distill cosine or mse)")
        if self.view_targets and self.distill == "none":
            raise DataError("--view-targets needs a distillation loss (--distill cosine or mse)")
        if self.branch_from and self.init:
            raise DataError("--branch-from continues a trunk's own weights; leave out --init")
        if self.batch_size < 1:
            raise DataError(f"--batch-size must be at least 1, not {self.batch_size}")
        for name in ("steps", "warmup_steps", "min_faces", "freeze_stages", "checkpoint_every", "eval_every",
                     "threads", "stop_at"):
            if getattr(self, name) < 0:
                raise DataError(f"{_flag(name)} cannot be negative, not {getattr(self, name)}")
        if self.log_every < 1:
            raise DataError(f"--log-every must be at least 1, not {self.log_every}")
        if not self.steps and self.epochs <= 0:
            raise DataError(f"--epochs must be positive when --steps is 0, not {self.epochs:g}")
        for name in ("lr", "min_lr", "weight_decay", "clip_grad", "checkpoint_minutes", "max_minutes",
                     "view_targets_weight"):
            if getattr(self, name) < 0:
                raise DataError(f"{_flag(name)} cannot be negative, not {getattr(self, name):g}")

    # ------------------------------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able data (what checkpoints, config.json and the card hold)."""
        return asdict(self)

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON (what ``facegnet train --dry-run`` prints and ``config.json`` holds)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> TrainConfig:
        """A configuration from plain data (a recipe, a checkpoint's ``config``, ``config.json``).

        Options of :data:`REMOVED` at their neutral value (0, None) are dropped; at any other value, and for keys
        that never were options, :class:`DataError` names ``source`` and the key.
        """
        return cls(**_known_options(data, source))


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The options a TOML recipe sets (checked against :class:`TrainConfig`'s fields; not yet validated as a
    whole, so that command-line options can still override them)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise DataError("recipe not found", path) from None
    except OSError as exc:
        raise DataError(f"recipe unreadable ({exc.strerror})", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"not a valid TOML recipe ({exc})", path) from None
    return _known_options(data, path)


def option_help(name: str) -> str:
    """The help text of one option."""
    return _field(name).metadata["help"]


def option_type(name: str) -> type:
    """The Python type of one option's values (bool, int, float, str or dict)."""
    f = _field(name)
    return f.metadata.get("kind") or (dict if f.default is MISSING else type(f.default))


# ----------------------------------------------------------------------------------------------- helpers
def _field(name: str):
    for f in fields(TrainConfig):
        if f.name == name:
            return f
    raise KeyError(name)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _known_options(data: dict[str, Any], source: str | Path | None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DataError("a training configuration is a table of options", source)
    known = {f.name for f in fields(TrainConfig)}
    kept = {}
    for key, value in data.items():
        if key in known:
            kept[key] = value
        elif key in REMOVED:
            if value not in (None, 0, 0.0, False):
                raise DataError(f"option {key!r} = {value!r} was removed from facegnet train ({REMOVED[key]}); "
                                "only its neutral value 0 still loads", source)
        else:
            raise DataError(f"unknown option {key!r} (see facegnet train --help)", source)
    return kept


def _checked_type(f, value: Any) -> Any:
    """``value`` as the field's type (ints accepted for floats), or a one-line :class:`DataError`."""
    kind = option_type(f.name)
    if value is None and (f.default is None or f.name == "model"):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is dict and isinstance(value, (dict, str)):
        return value
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    wanted = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
              dict: "a table of builder options or a variant name"}[kind]
    raise DataError(f"{_flag(f.name)} must be {wanted}, not {value!r}")


def _resolve_model(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """The full builder keyword arguments: the defaults, updated by a table, JSON text or a variant's name."""
    if value is None:
        return dict(DEFAULT_MODEL)
    if isinstance(value, str):
        from facegnet.models import FACE_VARIANTS

        if value in FACE_VARIANTS:
            value = FACE_VARIANTS[value]
        else:
            try:
                value = json.loads(value)
            except ValueError:
                raise DataError(f"--model is neither a variant ({', '.join(FACE_VARIANTS)}) nor JSON") from None
            if not isinstance(value, dict):
                raise DataError("--model JSON must be an object of builder keyword arguments")
    unknown = sorted(set(value) - set(DEFAULT_MODEL))
    if unknown:
        raise DataError(f"--model has no option {unknown[0]!r} (it takes {', '.join(DEFAULT_MODEL)})")
    return {**DEFAULT_MODEL, **value}
