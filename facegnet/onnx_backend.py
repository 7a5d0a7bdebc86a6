"""Embedding with ONNX Runtime: the same contract as :class:`facegnet.embed.Embedder`, without PyTorch at run time.

:class:`OnnxEmbedder` takes aligned uint8 crops (N, 112, 112, 3) and returns float32 (N, 512) unit vectors,
with the same normalisation (from the model card), flip test-time augmentation and batching as the PyTorch
embedder. By default it runs the cached ONNX export of the card's weights (fp32 or int8), made on first use
(:func:`facegnet.export.cached_onnx`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facegnet.card import ModelCard, resolve_card
from facegnet.embed import as_crop_batch
from facegnet.errors import FacegnetError


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


class OnnxEmbedder:
    """Turns aligned face crops into unit-length embeddings with ONNX Runtime (CPU).

    Args:
        card: the model card of the weights (default: the shipped model, or the untrained fallback).
        model: path of an ONNX export to run instead of the cached export of ``card``'s weights.
        int8: run the int8 (statically quantized) export rather than the fp32 one.
        flip: add the embedding of the mirrored crop (slightly more accurate, twice the compute).
        batch_size: crops per forward pass (with flip, each pass runs twice as many images).
        device: only "cpu" (kept for the same signature as :class:`facegnet.embed.Embedder`).
        threads: intra-op threads (default: :func:`default_threads`).
        spin: let idle ONNX Runtime threads busy-wait (lower latency; see :func:`make_session`).
        calibration: int8 only, when the export must be made: the training crops to calibrate on.
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
        calibration: str | Path | None = None,
    ) -> None:
        if str(device) != "cpu":
            raise FacegnetError(f"the ONNX back-ends run on the CPU only (device {device!r} asked for): "
                                "use device 'cpu' or the torch back-end")
        self.card = card if card is not None else resolve_card(None)
        self.flip = flip
        self.batch_size = max(1, int(batch_size))
        if model is None:
            from facegnet.export import cached_onnx

            model = cached_onnx(self.card, int8=int8, calibration=calibration)
        self.path = Path(model)
        self.session = make_session(self.path, threads, spin)
        self._input = self.session.get_inputs()[0].name
        self._mean = np.asarray(self.card.mean, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)
        self._std = np.asarray(self.card.std, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)

    @classmethod
    def from_export(cls, path: str | Path, **options) -> "OnnxEmbedder":
        """Run an ONNX export written by :func:`facegnet.export.export_onnx`, with the card beside it."""
        from facegnet.export import read_export_card

        card = ModelCard.from_dict(read_export_card(path), path=Path(path).with_suffix(".json").resolve())
        return cls(card, model=path, **options)

    @property
    def dim(self) -> int:
        return int(self.card.embedding_size)

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB crops → normalised float32 (N, 3, H, W) array."""
        batch = np.asarray(crops).transpose(0, 3, 1, 2).astype(np.float32)
        return np.ascontiguousarray((batch - self._mean) / self._std)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Embed (N, S, S, 3) uint8 crops (S = the card's input size): float32 (N, D) unit vectors."""
        crops = as_crop_batch(crops, self.card.input_size)
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for start in range(0, len(crops), self.batch_size):
            batch = self.preprocess(crops[start : start + self.batch_size])
            n = len(batch)
            if self.flip:
                # One run over the crops and their mirror images together: one call, twice the batch.
                both = np.concatenate([batch, batch[:, :, :, ::-1]])
                features = self.session.run(None, {self._input: both})[0]
                features = features[:n] + features[n:]
            else:
                features = self.session.run(None, {self._input: batch})[0]
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            out[start : start + n] = features / np.maximum(norms, 1e-12)
        return out
