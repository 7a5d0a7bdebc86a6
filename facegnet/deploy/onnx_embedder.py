"""Embedding with ONNX Runtime: the same contract as :class:`facegnet.embed.Embedder`, without PyTorch at run time.

:class:`OnnxEmbedder` takes aligned uint8 crops (N, 112, 112, 3) and returns float32 (N, 512) unit vectors,
with the same normalisation and flip test-time augmentation (:mod:`facegnet.preprocess`, shared with the PyTorch
embedder) and batching. It runs a given export, or the cached export of the card's weights (fp32 or int8) that
:func:`facegnet.deploy.exporter.cached_onnx` makes on first use. This module imports neither PyTorch nor
:mod:`facegnet.deploy.exporter`: a machine with onnxruntime, numpy and an export runs it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facegnet.card import ModelCard, resolve_card
from facegnet.deploy.onnx_cache import find_cached, read_export_card
from facegnet.errors import ExportError, FacegnetError
from facegnet.preprocess import crop_batch, embed_normalised, normalise


def default_threads() -> int:
    """Threads for one session: torch's setting when torch is loaded (``FaceRecognizer(threads=N)`` sets it),
    so both back-ends share one knob; otherwise one per CPU core."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def make_session(path: str | Path, threads: int | None = None, spin: bool = True):
    """An onnxruntime InferenceSession on the CPU execution provider.

    One pool of ``threads`` intra-op threads and sequential execution (a convolution network has no parallel
    branches worth a second pool); all graph optimisations. ``spin=False`` stops idle threads busy-waiting,
    kinder to other processes on a shared machine at a small latency cost.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no notices about unused initialisers
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / NoSuchFile classes
        from facegnet.errors import WeightsError

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise WeightsError(f"ONNX Runtime cannot load the model ({first[:200]})", path) from None


def _int8_of(path: str | Path, default: bool) -> tuple[bool, str | None]:
    """Whether an export is int8 and how it was calibrated, from its card (``default`` when it has none)."""
    try:
        card = read_export_card(path)
    except ExportError:
        return default, None
    int8 = bool(card.get("int8", default))
    return int8, (card.get("export", {}).get("int8_calibration") if int8 else None)


class OnnxEmbedder:
    """Turns aligned face crops into unit-length embeddings with ONNX Runtime (CPU).

    Args:
        card: the model card of the weights (default: the shipped model, or the untrained fallback).
        model: path of an ONNX export to run; default: the cached export of ``card``'s weights (made by
            :func:`facegnet.deploy.exporter.cached_onnx`, which ``FaceRecognizer(backend="onnx")`` calls on first use).
        int8: with ``model=None``: the cached int8 (statically quantized) export rather than the fp32 one.
        flip: add the embedding of the mirrored crop (twice the compute; see the card's thresholds per procedure).
        batch_size: crops per forward pass (with flip, each pass runs twice as many images).
        device: only "cpu" (kept for the same signature as :class:`facegnet.embed.Embedder`).
        threads: intra-op threads (default: :func:`default_threads`).
        spin: let idle ONNX Runtime threads busy-wait (lower latency; see :func:`make_session`).
    """

    def __init__(
        self,
        card: ModelCard | None = None,
        *,
        model: str | Path | None = None,
        int8: bool = False,
        flip: bool = True,
        batch_size: int = 64,
        device: str = "cpu",
        threads: int | None = None,
        spin: bool = True,
    ) -> None:
        if str(device) != "cpu":
            raise FacegnetError(f"the ONNX back-ends run on the CPU only (device {device!r} asked for): "
                                "use device 'cpu' or the torch back-end")
        self.card = card if card is not None else resolve_card(None)
        self.flip = flip
        self.batch_size = max(1, int(batch_size))
        if model is None:
            model = find_cached(self.card, int8)
            if model is None:
                raise ExportError("no ONNX export of these weights is cached yet: make it with "
                                  "facegnet.deploy.exporter.cached_onnx(card) (needs PyTorch) or pass model=PATH")
        self.int8, self.int8_calibration = _int8_of(model, int8)
        self.path = Path(model)
        self.session = make_session(self.path, threads, spin)
        self._input = self.session.get_inputs()[0].name

    @classmethod
    def from_export(cls, path: str | Path, **options) -> "OnnxEmbedder":
        """Run an ONNX export written by :func:`facegnet.deploy.exporter.export_onnx`, with the card beside it."""
        card = ModelCard.from_dict(read_export_card(path), path=Path(path).with_suffix(".json").resolve())
        return cls(card, model=path, **options)

    @property
    def dim(self) -> int:
        return int(self.card.embedding_size)

    @property
    def numerics(self) -> str:
        """Part of the embedding procedure: "fp32" (ONNX fp32 agrees with PyTorch to a cosine ≥ 0.9999, tested),
        "int8" (quantized with the ranges shipped with the weights) or "int8-custom" (other calibration data)."""
        if not self.int8:
            return "fp32"
        return "int8" if self.int8_calibration == "shipped" else "int8-custom"

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB crops → normalised float32 (N, 3, H, W) array."""
        return normalise(crops, self.card.mean, self.card.std)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: batch})[0]

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Embed (N, S, S, 3) uint8 crops (S = the card's input size): float32 (N, D) unit vectors."""
        crops = crop_batch(crops, self.card.input_size)
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for start in range(0, len(crops), self.batch_size):
            batch = self.preprocess(crops[start : start + self.batch_size])
            out[start : start + len(batch)] = embed_normalised(self._run, batch, self.flip)
        return out
