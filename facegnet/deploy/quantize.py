"""int8 for the embedding network: calibration crops, activation ranges shipped beside the weights, and static
quantisation of an fp32 ONNX export with ONNX Runtime (what ``--backend onnx-int8`` runs).

The fp32 export and the shipped ranges file are written by :mod:`facegnet.deploy.exporter`.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facegnet.card import ModelCard
from facegnet.deploy.onnx_cache import DEFAULT_QUANT_FORMAT, INPUT_NAME
from facegnet.errors import DataError, ExportError
from facegnet.io import IMAGE_SUFFIXES
from facegnet.preprocess import normalise

#: Crops the int8 activation ranges are measured on.
CALIBRATION_COUNT = 256


def _pack_crops(folder: Path) -> list[Path]:
    """The train-split crops of a training pack (manifest.csv), or every image in a plain folder, sorted."""
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        import csv

        with open(manifest, newline="") as handle:
            return [folder / row["crop"] for row in csv.DictReader(handle) if row.get("split", "train") == "train"]
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def default_calibration_dir() -> Path | None:
    """``$FACEGNET_CALIBRATION`` when set, else None (then int8 uses the ranges shipped with the weights)."""
    env = os.environ.get("FACEGNET_CALIBRATION")
    return Path(env) if env else None


def shipped_ranges(card: ModelCard) -> Path | None:
    """The int8 activation ranges shipped beside the card's weights (``<weights stem>.int8-ranges.json``), if any.

    They are ONNX Runtime's calibration cache (tensor → min/max) of the export of these weights, measured on
    training-pack crops by :func:`write_int8_ranges`; with them an installed user needs no training data. A file
    measured on other weights (its recorded ``source_sha256`` differs) is ignored.
    """
    if card.weights_path is None:
        return None
    path = card.weights_path.with_name(card.weights_path.stem + ".int8-ranges.json")
    try:
        measured_on = json.loads(path.read_text()).get("facegnet", {}).get("source_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    # Ranges of other weights (e.g. new weights shipped under the same name) would quantize these wrongly.
    return path if measured_on == card.fingerprint else None


def _calibration_for(card: ModelCard, calibration: str | Path | np.ndarray | None,
                     count: int = CALIBRATION_COUNT) -> np.ndarray | Path:
    """What int8 is calibrated from: crops (given, or read from a folder), else the shipped ranges file."""
    if isinstance(calibration, np.ndarray):
        return calibration
    folder = Path(calibration) if calibration is not None else default_calibration_dir()
    if folder is not None:
        return calibration_crops(folder, count, card.input_size)
    ranges = shipped_ranges(card)
    if ranges is None:
        raise DataError("int8 calibration needs aligned training crops (no int8 ranges ship with these weights): "
                        "set FACEGNET_CALIBRATION to the training pack (or a folder of 112×112 crops) or pass "
                        "--calibration DIR")
    return ranges


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
        self._batches = [normalise(crops[i : i + batch], card.mean, card.std) for i in range(0, len(crops), batch)]
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


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, crops: np.ndarray | str | Path, card: ModelCard,
                  quant_format: str = DEFAULT_QUANT_FORMAT, save_ranges: str | Path | None = None) -> dict[str, Any]:
    """Static int8 quantization of an fp32 ONNX export; returns the settings used.

    ``crops`` are uint8 calibration crops, or the path of an activation-ranges file (ONNX Runtime's calibration
    cache, e.g. :func:`shipped_ranges`) to quantize with instead of calibrating. ``save_ranges``: write the
    ranges found on ``crops`` there (what :func:`write_int8_ranges` ships).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from_ranges = not isinstance(crops, np.ndarray)
    if not from_ranges and len(crops) == 0:
        raise DataError("no calibration crops")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    prepared = out_path.with_name(out_path.stem + "-prepared.onnx")
    with warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        # Shape inference and graph folding first, as ONNX Runtime recommends (fewer, larger quantized ops).
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if from_ranges:
            _check_ranges_cover(prepared, Path(crops))
        settings = {
            "method": "static post-training quantization (onnxruntime.quantization.quantize_static)",
            "format": quant_format.upper(),
            "weights": "int8, per channel, 7-bit range (reduce_range: no saturation on CPUs without VNNI)",
            "activations": "uint8, asymmetric, MinMax calibration",
            "calibration": (f"activation ranges shipped with the weights ({Path(crops).name}), measured on "
                            "aligned crops of the training pack (train split; never LFW)") if from_ranges else
            f"{len(crops)} aligned crops (the training pack's train split by default; never LFW)",
        }
        cache = Path(crops) if from_ranges else (Path(save_ranges) if save_ranges is not None else None)
        if cache is not None and not from_ranges:
            cache.unlink(missing_ok=True)  # ONNX Runtime reads an existing cache instead of calibrating
        try:
            quantize_static(
                str(prepared),
                str(out_path),
                None if from_ranges else _CropReader(crops, card),
                quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                # MinMax keeps only per-tensor min/max (ReduceMin/ReduceMax outputs), so memory stays small. Do not
                # add CalibMaxIntermediateOutputs: onnxruntime 1.32 drops the collected batches instead of merging.
                calibrate_method=CalibrationMethod.MinMax,
                calibration_cache_path=None if cache is None else str(cache),
            )
        except TypeError as exc:  # an onnxruntime without calibration caches (< 1.32)
            if cache is None:
                raise
            raise ExportError(f"int8 from stored activation ranges needs onnxruntime ≥ 1.32 ({exc})", cache) from None
    prepared.unlink(missing_ok=True)
    return settings


def _check_ranges_cover(prepared: Path, ranges: Path) -> None:
    """Refuse a ranges file measured on another graph (another exporter names tensors differently)."""
    import onnx

    try:
        data = json.loads(ranges.read_text())
        names = set(data["data"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"unreadable int8 ranges file ({exc.__class__.__name__})", ranges) from None
    graph = onnx.load(str(prepared)).graph
    tensors = {name for node in graph.node for name in node.output} | {i.name for i in graph.input}
    missing = names - tensors
    if missing or not names:
        raise ExportError(f"the int8 ranges do not fit this export ({len(missing)} of {len(names)} tensors missing: "
                          "another exporter version?); calibrate with --calibration DIR", ranges)
