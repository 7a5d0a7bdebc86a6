"""Export the embedding network for deployment: ONNX (fp32 or int8) and TorchScript, each with its model card.

Every export writes two files: the model (``OUT``) and its card beside it (same stem, ``.json``): the source
card's fields plus ``format``, ``opset``, ``int8``, ``file_sha256`` (the exported file) and ``source_sha256``
(the fingerprint of the weights it came from; the card's ``sha256`` keeps that fingerprint too, so galleries
treat the export's embeddings as the weights' own). The graph holds the network only: inputs are float32
(N, 3, 112, 112) RGB normalised as ``(rgb / 255 - mean) / std`` with the card's mean and std; outputs are the raw
(N, 512) embeddings. Flip test-time augmentation and L2 normalisation stay with the caller
(:class:`facegnet.deploy.onnx_embedder.OnnxEmbedder` does both, like :class:`facegnet.embed.Embedder`).

int8 is static post-training quantization with ONNX Runtime (QDQ, per-channel int8 weights, uint8
activations, 7-bit weight range for CPUs without VNNI), calibrated on crops of the training pack; never on LFW.
The activation ranges found on those crops ship beside the weights (``<weights>.int8-ranges.json``, written by
:func:`write_int8_ranges`), so an installed user's int8 export is made from them without any training data.

:func:`cached_onnx` returns the ONNX export of a card's weights from ``~/.cache/facegnet/onnx`` (or
``$FACEGNET_CACHE/onnx``), keyed by the weights' sha256, exporting it (atomically) when it is missing.
Paths and card reading live in :mod:`facegnet.deploy.onnx_cache` (no PyTorch), so the ONNX Runtime back-end
never imports this module.
"""
from __future__ import annotations

import contextlib
import copy
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

from facegnet.atomic import atomic_path
from facegnet.card import ModelCard, resolve_card, sha256_file
from facegnet.deploy.onnx_cache import (  # noqa: F401  (re-exported: the names callers of this module know)
    DEFAULT_QUANT_FORMAT,
    EXPORT_VERSION,
    INPUT_NAME,
    OUTPUT_NAME,
    cache_dir,
    cache_key,
    cache_valid,
    cached_onnx_path,
    card_path_for,
    read_export_card,
)
from facegnet.deploy.onnx_embedder import make_session

# int8 lives in facegnet.deploy.quantize; these names are kept here for the callers that know them.
from facegnet.deploy.quantize import (  # noqa: F401
    CALIBRATION_COUNT,
    _calibration_for,
    calibration_crops,
    default_calibration_dir,
    quantize_onnx,
    shipped_ranges,
)
from facegnet.errors import DataError, ExportError
from facegnet.locking import locked
from facegnet.preprocess import normalise

#: ONNX opset of the exports (ONNX Runtime ≥ 1.17 runs it; 17 is the oldest with every op we need in QDQ form).
ONNX_OPSET = 17
#: Crops of the training pack used to calibrate int8 activations (a few hundred cover the ranges well).
QUANT_FORMATS = ("qdq", "qoperator")


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
    """uint8 (N, H, W, 3) RGB crops → float32 (N, 3, H, W) network input with the card's normalisation."""
    return normalise(crops, card.mean, card.std)


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
    try:
        with atomic_path(path, 0o644) as tmp:  # an export is meant to be shipped and shared
            yield tmp
    except OSError as exc:
        raise ExportError(f"cannot write ({exc.strerror or exc.__class__.__name__})", path) from None


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
            folder; default: ``$FACEGNET_CALIBRATION``, else the activation ranges shipped with the weights
            (:func:`shipped_ranges`), else a DataError.
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
        crops = _calibration_for(card, calibration, calibration_count)
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


def cached_onnx(card: ModelCard | None = None, *, int8: bool = False) -> Path:
    """The ONNX export of ``card``'s weights (default: the active ones), exported into the cache if missing.

    A cached file is reused only when its card names the same source weights and its own sha256 still
    matches; anything else is exported again. int8 exports are quantized from the cached fp32 one with the
    activation ranges shipped with the weights (no training data needed; DataError when none ship).
    """
    card = card if card is not None else resolve_card(None)
    path = cached_onnx_path(card, int8)
    if cache_valid(path, card):
        return path
    _refuse_foreign_card(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the export cache ({exc.strerror}); set FACEGNET_CACHE", path.parent) \
            from None
    with locked(path.with_suffix(".lock")):  # two processes do not export the same model at once
        if cache_valid(path, card):  # another process made it while we waited
            return path
        if not int8:
            return export_onnx(card, path)
        ranges = shipped_ranges(card)
        if ranges is None:
            raise DataError(f"no int8 activation ranges ship with the weights {card.name}: make an int8 export "
                            "with `facegnet export --int8 --calibration DIR` (training crops) and run it instead")
        return _quantize_file(cached_onnx(card), path, card, ranges)


def _quantize_file(fp32: Path, path: Path, card: ModelCard, crops: np.ndarray | Path,
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
    # "shipped": the weights' own ranges, the procedure whose thresholds the card holds; else other data.
    extra["int8_calibration"] = "shipped" if isinstance(crops, Path) and crops == shipped_ranges(card) else "custom"
    _write_card(path, card, "onnx", opset=fp32_card.get("opset"), int8=True, extra={**extra, "quantization": settings})
    return path


def write_int8_ranges(card: ModelCard, crops: np.ndarray, out: str | Path) -> Path:
    """Measure int8 activation ranges of ``card``'s export on ``crops`` (training crops, never LFW) into ``out``.

    What ships beside the weights (:func:`shipped_ranges`): quantizing from it gives the same int8 model as
    calibrating on ``crops`` does.
    """
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="facegnet-export-") as scratch:
        fp32 = export_onnx(card, Path(scratch) / "fp32.onnx")
        quantize_onnx(fp32, Path(scratch) / "int8.onnx", crops, card, save_ranges=Path(scratch) / "ranges.json")
        data = json.loads((Path(scratch) / "ranges.json").read_text())
    data["facegnet"] = {"source_sha256": card.fingerprint, "crops": int(len(crops)), "export_version": EXPORT_VERSION}
    with _atomic_path(out) as tmp:
        tmp.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    return out
