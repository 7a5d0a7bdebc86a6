"""Export the embedding network for deployment: ONNX (fp32 or int8) and TorchScript, each with its model card.

Every export writes two files: the model (``OUT``) and its card beside it (same stem, ``.json``): the source
card's fields plus ``format``, ``opset``, ``int8``, ``file_sha256`` (the exported file) and ``source_sha256``
(the fingerprint of the weights it came from; the card's ``sha256`` keeps that fingerprint too, so galleries
treat the export's embeddings as the weights' own). The graph holds the network only: inputs are float32
(N, 3, 112, 112) RGB normalised as ``(rgb / 255 - mean) / std`` with the card's mean and std; outputs are the raw
(N, 512) embeddings. Flip test-time augmentation and L2 normalisation stay with the caller
(:class:`facegnet.onnx_backend.OnnxEmbedder` does both, like :class:`facegnet.embed.Embedder`).

int8 is static post-training quantization with ONNX Runtime (QDQ, per-channel int8 weights, uint8
activations, 7-bit weight range for CPUs without VNNI), calibrated on crops of the training pack; never on LFW.

:func:`cached_onnx` returns the ONNX export of a card's weights from ``~/.cache/facegnet/onnx`` (or
``$FACEGNET_CACHE/onnx``), keyed by the weights' sha256, exporting it (atomically) when it is missing.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facegnet.card import ModelCard, resolve_card, sha256_file
from facegnet.errors import DataError, ExportError

#: ONNX opset of the exports (ONNX Runtime ≥ 1.17 runs it; 17 is the oldest with every op we need in QDQ form).
ONNX_OPSET = 17
#: Bumped whenever the export recipe changes, so that cached exports made by older code are not reused.
EXPORT_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "input", "embedding"
#: Crops of the training pack used to calibrate int8 activations (a few hundred cover the ranges well).
CALIBRATION_COUNT = 256
#: Default int8 layout: QDQ measured faster than QOperator on this CPU (benchmarks/embed_backends.py).
DEFAULT_QUANT_FORMAT = "qdq"
QUANT_FORMATS = ("qdq", "qoperator")
_REPO_PACK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"
_IMAGE_SUFFIXES = {".webp", ".png", ".jpg", ".jpeg", ".bmp"}


Source = ModelCard | nn.Module | str | Path | None


# -- sources --------------------------------------------------------------------------------------------------------


def load_source(source: Source = None, card: ModelCard | None = None) -> tuple[nn.Module, ModelCard]:
    """The network to export, in eval mode on the CPU, and its card.

    ``source`` is a :class:`ModelCard`, anything :func:`resolve_card` accepts (None: the active weights, a card
    name, a .json card or a .pt weight file), or an already built ``nn.Module`` (then ``card`` describes it; by
    default the active card). A given module is copied, never moved or switched out of training mode.
    """
    if isinstance(source, nn.Module):
        model = copy.deepcopy(source)
        card = card if card is not None else resolve_card(None)
    else:
        from facegnet.models import build_from_card

        card = source if isinstance(source, ModelCard) else resolve_card(source)
        model = build_from_card(card)
    return model.cpu().eval(), card


def preprocess(crops: np.ndarray, card: ModelCard) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB crops → float32 (N, 3, H, W), ``(rgb / 255 - mean) / std`` (as Embedder does)."""
    mean = np.asarray(card.mean, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)
    std = np.asarray(card.std, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)
    batch = np.asarray(crops).transpose(0, 3, 1, 2).astype(np.float32)
    return np.ascontiguousarray((batch - mean) / std)


# -- output paths and cards ------------------------------------------------------------------------------------------


def _refuse_foreign_card(path: Path) -> None:
    """Refuse to write an export whose card path holds a card that is not an export's (e.g. the shipped one)."""
    card_path = card_path_for(path)
    if not card_path.is_file():
        return
    try:
        is_export = "format" in json.loads(card_path.read_text())
    except (OSError, ValueError):
        is_export = False
    if not is_export:  # e.g. OUT beside the shipped weights: never overwrite a source card or its weights
        raise ExportError(f"{card_path.name} beside it is not the card of an export and would be overwritten; "
                          "choose another name", path)


def card_path_for(path: str | Path) -> Path:
    """Where the card of an export lives: beside it, same stem, ``.json``."""
    return Path(path).with_suffix(".json")


def _check_out(path: str | Path, suffixes: tuple[str, ...], what: str) -> Path:
    """Validate an output path (one clear ExportError), creating its folder when missing."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"is a folder; give the {what} file to write, e.g. {path / ('facegnet' + suffixes[0])}",
                          path)
    if path.suffix.lower() not in suffixes:
        raise ExportError(f"the name of the {what} file must end in {' or '.join(suffixes)}", path)
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ExportError(f"cannot write there: {blocker} is a file, not a folder", path)
    _refuse_foreign_card(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create its folder ({exc.strerror or exc.__class__.__name__})", path) from None
    if not os.access(path.parent, os.W_OK):
        raise ExportError("its folder is not writable", path)
    return path


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name in ``path``'s folder, renamed onto ``path`` when the block succeeds (removed if not)."""
    tmp_path: Path | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; an export is meant to be shipped and shared
        os.replace(tmp_path, path)
    except OSError as exc:
        raise ExportError(f"cannot write ({exc.strerror or exc.__class__.__name__})", path) from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def _write_card(path: Path, card: ModelCard, fmt: str, *, opset: int | None, int8: bool,
                extra: dict[str, Any]) -> Path:
    """Write the export's card beside it (atomically) and return the card's path."""
    data = card.to_dict()
    data.update(
        {
            # The card's weights are the export itself (None stays None: an untrained network is still untrained).
            "weights_file": path.name if card.trained else None,
            "format": fmt,
            "opset": opset,
            "int8": int8,
            "file_sha256": sha256_file(path),
            "source_sha256": card.fingerprint,
            "source_weights": card.weights_file,
            "export": {
                "version": EXPORT_VERSION,
                "input": f"{INPUT_NAME}: float32 (N, 3, {card.input_size}, {card.input_size}) RGB, "
                f"(rgb / 255 - mean) / std; N is dynamic",
                "output": f"{OUTPUT_NAME}: float32 (N, {card.embedding_size}), not normalised",
                "flip_tta": "not in the graph: add the output of the mirrored crop, then L2-normalise",
                "torch": torch.__version__,
                **extra,
            },
        }
    )
    target = card_path_for(path)
    with _atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return target


def read_export_card(path: str | Path) -> dict[str, Any]:
    """The card of an export (given the export or its card), as a dict; ExportError when missing or unreadable."""
    target = card_path_for(path)
    try:
        data = json.loads(target.read_text())
    except FileNotFoundError:
        raise ExportError("no model card beside the export", target) from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"unreadable model card ({exc.__class__.__name__})", target) from None
    if not isinstance(data, dict) or "format" not in data:
        raise ExportError("not the card of an export (no 'format')", target)
    return data


# -- ONNX ------------------------------------------------------------------------------------------------------------


def _export_fp32(model: nn.Module, card: ModelCard, path: Path, opset: int) -> None:
    """torch.onnx.export (TorchScript-based exporter: needs no onnxscript) with a dynamic batch axis."""
    example = torch.zeros(2, 3, card.input_size, card.input_size)  # batch 2: nothing specialises on batch 1
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices mean nothing to users
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL,
        )


def check_onnx(path: str | Path) -> None:
    """Run the ONNX checker (full check, with shape inference); ExportError naming the file when it fails."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # ValidationError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ExportError(f"the ONNX checker rejects the export ({first})", path) from None


def _agreement(model: nn.Module, card: ModelCard, onnx_path: Path, crops: np.ndarray) -> float:
    """Smallest per-face cosine between PyTorch's and ONNX Runtime's raw embeddings of ``crops``."""
    from facegnet.onnx_backend import make_session

    batch = preprocess(crops, card)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).numpy()
    got = make_session(onnx_path, threads=1).run(None, {INPUT_NAME: batch})[0]
    cos = (expected * got).sum(1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1) + 1e-12)
    return float(cos.min())


def _probe_crops(card: ModelCard, count: int = 4) -> np.ndarray:
    """Fixed pseudo-random crops (smooth blobs, not noise) for the post-export agreement check."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)
    size = card.input_size
    return np.repeat(np.repeat(small, -(-size // 8), axis=1), -(-size // 8), axis=2)[:, :size, :size]


def export_onnx(
    source: Source,
    path: str | Path,
    int8: bool = False,
    *,
    card: ModelCard | None = None,
    opset: int = ONNX_OPSET,
    calibration: str | Path | np.ndarray | None = None,
    calibration_count: int = CALIBRATION_COUNT,
    quant_format: str = DEFAULT_QUANT_FORMAT,
) -> Path:
    """Export the embedding network to ONNX at ``path`` (ending in .onnx) and write its card beside it.

    Args:
        source: a card, a weights spec for :func:`resolve_card` (None: the active weights) or a built module.
        path: the .onnx file to write (its folder is created; the write is atomic).
        int8: quantize (static, calibrated on ``calibration``); otherwise fp32.
        card: the card of ``source`` when it is a module (default: the active card).
        opset: ONNX opset.
        calibration: int8 only: uint8 crops (N, 112, 112, 3), a folder of crop images, or the training pack's
            folder; default: ``$FACEGNET_CALIBRATION`` or the repository's ``../shared/data/train``.
        calibration_count: crops drawn (evenly spread over the train split) for calibration.
        quant_format: "qdq" or "qoperator".

    The graph is checked with the ONNX checker; an fp32 export must also agree with PyTorch (cosine ≥ 0.9999).
    Returns the path of the export.
    """
    path = _check_out(path, (".onnx",), "ONNX")
    if quant_format not in QUANT_FORMATS:
        raise ExportError(f"unknown quantization format {quant_format!r} (choose from {', '.join(QUANT_FORMATS)})")
    model, card = load_source(source, card)
    if int8:
        crops = calibration if isinstance(calibration, np.ndarray) else calibration_crops(
            calibration, calibration_count, card.input_size)
        with tempfile.TemporaryDirectory(prefix="facegnet-export-") as scratch:
            fp32 = export_onnx(model, Path(scratch) / "fp32.onnx", card=card, opset=opset)
            return _quantize_file(fp32, path, card, crops, quant_format)
    with tempfile.TemporaryDirectory(prefix="facegnet-export-") as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        _export_fp32(model, card, fp32, opset)
        check_onnx(fp32)
        worst = _agreement(model, card, fp32, _probe_crops(card))
        if worst < 0.9999:
            raise ExportError(f"the ONNX graph disagrees with PyTorch (cosine {worst:.6f})", path)
        with _atomic_path(path) as tmp:
            tmp.write_bytes(fp32.read_bytes())
    import onnx
    import onnxruntime

    extra = {"agreement_cosine_min": round(worst, 6), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    _write_card(path, card, "onnx", opset=opset, int8=False, extra=extra)
    return path


# -- int8 ------------------------------------------------------------------------------------------------------------


def _pack_crops(folder: Path) -> list[Path]:
    """The train-split crops of a training pack (manifest.csv), or every image in a plain folder, sorted."""
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        import csv

        with open(manifest, newline="") as handle:
            return [folder / row["crop"] for row in csv.DictReader(handle) if row.get("split", "train") == "train"]
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def default_calibration_dir() -> Path | None:
    """``$FACEGNET_CALIBRATION``, else the repository's training pack when it is there, else None."""
    env = os.environ.get("FACEGNET_CALIBRATION")
    if env:
        return Path(env)
    return _REPO_PACK if _REPO_PACK.is_dir() else None


def calibration_crops(folder: str | Path | None = None, count: int = CALIBRATION_COUNT, size: int = 112) -> np.ndarray:
    """``count`` aligned crops, evenly spread over the training pack's train split (or a folder of crops).

    Never point this at LFW: it is the evaluation benchmark. Returns uint8 (N, size, size, 3).
    """
    from PIL import Image

    folder = Path(folder) if folder is not None else default_calibration_dir()
    if folder is None:
        raise DataError("int8 calibration needs aligned training crops: set FACEGNET_CALIBRATION to the training "
                        "pack (or a folder of 112×112 crops) or pass --calibration DIR")
    if not folder.is_dir():
        raise DataError("calibration folder not found", folder)
    if "lfw" in {part.lower() for part in folder.resolve().parts}:
        raise DataError("LFW is for evaluation only: calibrate on training crops", folder)
    paths = _pack_crops(folder)
    if not paths:
        raise DataError("no crop images in the calibration folder", folder)
    picks = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(count, len(paths)))]
    crops = []
    for p in picks:
        try:
            with Image.open(p) as image:
                crop = np.asarray(image.convert("RGB"))
        except OSError:
            raise DataError("unreadable calibration crop", p) from None
        if crop.shape[:2] != (size, size):
            raise DataError(f"calibration crops must be aligned {size}×{size} faces (got {crop.shape[1]}×"
                            f"{crop.shape[0]})", p)
        crops.append(crop)
    return np.stack(crops)


class _CropReader:
    """onnxruntime CalibrationDataReader over preprocessed crops, a batch at a time."""

    def __init__(self, crops: np.ndarray, card: ModelCard, batch: int = 32) -> None:
        self._batches = [preprocess(crops[i : i + batch], card) for i in range(0, len(crops), batch)]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {INPUT_NAME: self._batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs notices (e.g. about the 1-d BatchNorm after Flatten) on the root logger."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, crops: np.ndarray, card: ModelCard,
                  quant_format: str = DEFAULT_QUANT_FORMAT) -> dict[str, Any]:
    """Static int8 quantization of an fp32 ONNX export, calibrated on ``crops``; returns the settings used."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(crops) == 0:
        raise DataError("no calibration crops")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    prepared = out_path.with_name(out_path.stem + "-prepared.onnx")
    with warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        # Shape inference and graph folding first, as ONNX Runtime recommends (fewer, larger quantized ops).
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        settings = {
            "method": "static post-training quantization (onnxruntime.quantization.quantize_static)",
            "format": quant_format.upper(),
            "weights": "int8, per channel, 7-bit range (reduce_range: no saturation on CPUs without VNNI)",
            "activations": "uint8, asymmetric, MinMax calibration",
            "calibration": f"{len(crops)} aligned crops of the training pack (train split; never LFW)",
        }
        quantize_static(
            str(prepared),
            str(out_path),
            _CropReader(crops, card),
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # MinMax keeps only per-tensor min/max (ReduceMin/ReduceMax outputs), so memory stays small. Do not add
            # CalibMaxIntermediateOutputs: onnxruntime 1.32 drops the collected batches instead of merging them.
            calibrate_method=CalibrationMethod.MinMax,
        )
    prepared.unlink(missing_ok=True)
    return settings


# -- TorchScript -----------------------------------------------------------------------------------------------------


def export_torchscript(source: Source, path: str | Path, *, card: ModelCard | None = None) -> Path:
    """Trace the embedding network to TorchScript at ``path`` (.pt or .ts) and write its card beside it.

    The traced module takes the same input as the ONNX graph (any batch size) and returns raw embeddings.
    """
    path = _check_out(path, (".pt", ".ts"), "TorchScript")
    model, card = load_source(source, card)
    example = torch.zeros(2, 3, card.input_size, card.input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        with _atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp))
    _write_card(path, card, "torchscript", opset=None, int8=False, extra={})
    return path


# -- the cache -------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$FACEGNET_CACHE`` or ``~/.cache/facegnet``."""
    env = os.environ.get("FACEGNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "facegnet"


def cache_key(card: ModelCard) -> str:
    """The weights' sha256; for the untrained network (one fingerprint for every config) a hash of its config."""
    if card.trained:
        return card.fingerprint
    described = json.dumps([card.fingerprint, card.architecture, card.config, card.input_size,
                            card.embedding_size], sort_keys=True)
    return "untrained-" + hashlib.sha256(described.encode()).hexdigest()[:16]


def cached_onnx_path(card: ModelCard, int8: bool = False) -> Path:
    """Where :func:`cached_onnx` keeps the export of ``card``'s weights."""
    variant = f"int8-{DEFAULT_QUANT_FORMAT}" if int8 else "fp32"
    return cache_dir() / "onnx" / f"{cache_key(card)}-{variant}-v{EXPORT_VERSION}.onnx"


def _cache_valid(path: Path, card: ModelCard) -> bool:
    if not path.is_file():
        return False
    try:
        data = read_export_card(path)
    except ExportError:
        return False
    return data.get("source_sha256") == card.fingerprint and data.get("file_sha256") == sha256_file(path)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX), so that two processes do not export the same model at once."""
    try:
        import fcntl
    except ImportError:  # Windows: atomic renames alone keep the cache consistent
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_onnx(card: ModelCard | None = None, *, int8: bool = False,
                calibration: str | Path | None = None) -> Path:
    """The ONNX export of ``card``'s weights (default: the active ones), exported into the cache if missing.

    A cached file is reused only when its card names the same source weights and its own sha256 still
    matches; anything else is exported again. int8 exports are quantized from the cached fp32 one.
    """
    card = card if card is not None else resolve_card(None)
    path = cached_onnx_path(card, int8)
    if _cache_valid(path, card):
        return path
    _refuse_foreign_card(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the export cache ({exc.strerror}); set FACEGNET_CACHE", path.parent) \
            from None
    with _lock(path.with_suffix(".lock")):
        if _cache_valid(path, card):  # another process made it while we waited
            return path
        if not int8:
            return export_onnx(card, path)
        fp32 = cached_onnx(card)
        crops = calibration_crops(calibration, CALIBRATION_COUNT, card.input_size)
        return _quantize_file(fp32, path, card, crops)


def _quantize_file(fp32: Path, path: Path, card: ModelCard, crops: np.ndarray,
                   quant_format: str = DEFAULT_QUANT_FORMAT) -> Path:
    """int8 export of an existing fp32 export (no second trip through PyTorch), with its card."""
    fp32_card = read_export_card(fp32)
    with tempfile.TemporaryDirectory(prefix="facegnet-export-") as scratch:
        out = Path(scratch) / "int8.onnx"
        settings = quantize_onnx(fp32, out, crops, card, quant_format)
        check_onnx(out)
        with _atomic_path(path) as tmp:
            tmp.write_bytes(out.read_bytes())
    extra = {k: v for k, v in fp32_card["export"].items() if k in ("onnx", "onnxruntime")}
    extra["fp32_agreement_cosine_min"] = fp32_card["export"].get("agreement_cosine_min")
    _write_card(path, card, "onnx", opset=fp32_card.get("opset"), int8=True, extra={**extra, "quantization": settings})
    return path
