"""Model cards: the JSON file that travels beside every weight file and tells the code how to use it.

A card names the architecture and its configuration, the input size and normalisation, the embedding size,
the calibrated verification threshold (with the dev false-accept rate it targets), the training data and its
licence, the measured LFW accuracy, and the sha256 fingerprint of the weights, which galleries record.

Thresholds belong to an *embedding procedure*, not to weights alone: the same weights with or without flip
test-time augmentation, in fp32 or int8, give different similarities. ``thresholds`` holds one calibrated entry
per procedure ("flip:fp32", "noflip:fp32", "flip:int8", "noflip:int8"); :meth:`ModelCard.for_procedure` returns
the card with that procedure's thresholds, or refuses a procedure that was never calibrated.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facegnet.atomic import write_text
from facegnet.errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Name of the card the API and CLI use when none is given.
DEFAULT_MODEL = "facegnet-default"
#: Fingerprint recorded for the untrained fallback network (fixed seed), so galleries can refuse mixing.
UNTRAINED_FINGERPRINT = "untrained-ghostfacenet-seed0"


@dataclass
class ModelCard:
    """Everything the code needs to know about one set of weights."""

    name: str
    architecture: str = "ghostfacenet"  # a builder in facegnet.models
    config: dict[str, Any] = field(default_factory=dict)  # keyword arguments of that builder
    input_size: int = 112
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # applied to RGB scaled to [0, 1]
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    embedding_size: int = 512
    threshold: float = 0.3  # cosine similarity at or above which two faces are "same"
    threshold_far: float | None = None  # dev false-accept rate the threshold targets
    # Open-set identification compares a probe with every enrolled person, so a stranger gets many chances to
    # pass: galleries default to this stricter threshold (calibrated on all dev impostor pairs) when present.
    identify_threshold: float | None = None
    identify_threshold_far: float | None = None  # per-comparison dev false-accept rate it targets
    # The upper tail of the dev impostor scores (quantiles and a fitted tail beyond them; written by
    # benchmarks/calibrate_search_threshold.py): galleries place their threshold from it for a false-alarm rate
    # per *search* at their number of templates (facegnet.gallery.search_threshold). None: the fixed threshold above.
    impostor_tail: dict[str, Any] | None = None
    weights_file: str | None = None  # relative to the card
    sha256: str = UNTRAINED_FINGERPRINT
    # Per embedding procedure ("flip:fp32", ...): threshold, threshold_far, identify_threshold,
    # identify_threshold_far, impostor_tail and the dev figures they came from. Absent in older cards: then
    # the top-level thresholds are those of "flip:fp32", the procedure facegnet.train.release calibrates with.
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    lfw: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    path: Path | None = field(default=None, compare=False)  # where the card was read from

    @property
    def fingerprint(self) -> str:
        """The sha256 of the weights (what galleries record)."""
        return self.sha256

    @property
    def open_set_threshold(self) -> float:
        """The default threshold for naming a face from a gallery (identification), else the verification one."""
        return float(self.identify_threshold if self.identify_threshold is not None else self.threshold)

    @property
    def trained(self) -> bool:
        return self.weights_file is not None

    def procedure(self, flip: bool, numerics: str = "fp32") -> str:
        """The name of an embedding procedure of these weights: ``<sha256>:<flip|noflip>:<numerics>``.

        Embeddings are comparable only within one procedure; galleries record it.
        """
        return f"{self.fingerprint}:{procedure_key(flip, numerics)}"

    def calibrated_procedures(self) -> list[str]:
        """The procedure keys ("flip:fp32", ...) this card holds thresholds for."""
        return sorted(self.thresholds) if self.thresholds else ["flip:fp32"]

    def for_procedure(self, flip: bool, numerics: str = "fp32") -> "ModelCard":
        """This card with the thresholds calibrated for one procedure (the top-level threshold fields replaced).

        Raises :class:`WeightsError` when trained weights have no thresholds for it (an untrained network's
        thresholds mean nothing under any procedure, so it is let through).
        """
        key = procedure_key(flip, numerics)
        if not self.thresholds:
            entry = {"threshold": self.threshold, "threshold_far": self.threshold_far,
                     "identify_threshold": self.identify_threshold,
                     "identify_threshold_far": self.identify_threshold_far,
                     "impostor_tail": self.impostor_tail} if key == "flip:fp32" else None
        else:
            entry = self.thresholds.get(key)
        if entry is None:
            if not self.trained:
                return self
            raise WeightsError(
                f"no thresholds calibrated for the procedure {key} of these weights (calibrated: "
                f"{', '.join(self.calibrated_procedures())}); choose one of those or give a threshold",
                self.path or self.name,
            )
        return dataclasses.replace(
            self,
            threshold=float(entry["threshold"]),
            threshold_far=entry.get("threshold_far"),
            identify_threshold=entry.get("identify_threshold"),
            identify_threshold_far=entry.get("identify_threshold_far"),
            impostor_tail=entry.get("impostor_tail"),
        )

    @property
    def weights_path(self) -> Path | None:
        if self.weights_file is None:
            return None
        base = self.path.parent if self.path is not None else WEIGHTS_DIR
        return base / self.weights_file

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    def save(self, path: str | Path) -> Path:
        """Write the card as JSON, atomically (a reader never sees half a card), readable by all (0644)."""
        path = Path(path)
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", mode=0o644)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "ModelCard":
        known = {f for f in cls.__dataclass_fields__ if f != "path"}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(float(v) for v in kwargs[key])
        return cls(**kwargs, path=path)


#: The GhostFaceNet builder's keyword arguments and their defaults: the one place the model configuration is
#: spelled (the network, the trainer's default model and the untrained card all read it).
GHOSTFACENET_DEFAULTS: dict[str, Any] = {
    "width": 1.0,
    "stem_stride": 2,
    "prelu": True,
    "dfc": False,
    "embedding_size": 512,
    "dropout": 0.0,
    "input_size": 112,
}


def procedure_key(flip: bool, numerics: str = "fp32") -> str:
    """The per-weights part of a procedure name: "flip:fp32", "noflip:int8", ..."""
    return f"{'flip' if flip else 'noflip'}:{numerics}"


def untrained_card() -> ModelCard:
    """The card of the fixed-seed untrained network used until trained weights ship."""
    return ModelCard(
        name="untrained",
        config={k: v for k, v in GHOSTFACENET_DEFAULTS.items() if k not in ("dropout", "input_size")},
        notes="Random initialisation (seed 0): verification accuracy is near chance. Train or install weights.",
    )


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_card(weights: str | Path | None = None) -> ModelCard:
    """Find the card for ``weights``.

    ``weights`` may be None (the shipped default, or the untrained fallback when none ships), the name of a
    card in ``facegnet/weights``, a path to a card (``.json``) or a path to a weight file (``.pt``) with its
    card beside it (same stem, ``.json``).
    """
    if weights is None:
        default = WEIGHTS_DIR / f"{DEFAULT_MODEL}.json"
        return load_card(default) if default.exists() else untrained_card()
    if str(weights) == "untrained":
        return untrained_card()
    candidate = Path(weights)
    if candidate.suffix == "" and not candidate.exists():
        candidate = WEIGHTS_DIR / f"{weights}.json"
    if candidate.suffix == ".pt":
        card_path = candidate.with_suffix(".json")
        if not candidate.exists():
            raise WeightsError("weight file not found", candidate)
        if not card_path.exists():
            raise WeightsError(f"no model card beside the weights (expected {card_path.name})", candidate)
        return load_card(card_path)
    return load_card(candidate)


def read_card_json(path: Path, key: str, error: type[Exception] = WeightsError,
                   missing: str = "model card not found", wrong: str = "not a model card") -> dict[str, Any]:
    """A card file's JSON object, which must hold ``key``; ``error`` (naming the file) when it cannot be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(missing, path) from None
    except (OSError, ValueError) as exc:
        raise error(f"unreadable model card ({exc.__class__.__name__})", path) from None
    if not isinstance(data, dict) or key not in data:
        raise error(f"{wrong} (no {key!r})", path)
    return data


def load_card(path: str | Path) -> ModelCard:
    """Read a model card from a JSON file."""
    path = Path(path)
    return ModelCard.from_dict(read_card_json(path, "name"), path=path.resolve())
