"""MTCNN's three networks through ONNX Runtime, exported from facenet-pytorch's own weights and cached.

facenet-pytorch runs P-, R- and O-Net in eager PyTorch, where the many small convolutions of an image pyramid
cost more in per-layer overhead than in arithmetic. Here each network is exported once to ONNX (from the weights
inside the facenet-pytorch package: nothing is downloaded) into ``<cache>/mtcnn`` (see
:func:`facegnet.deploy.onnx_cache.cache_dir`), keyed by the sha256 of those weight files, and run by ONNX Runtime.

:class:`OrtNet` gives the same outputs as facenet-pytorch's ``PNet``/``RNet``/``ONet`` to float tolerance
(tests/test_detect_align.py); :mod:`facegnet.detection.mtcnn_stages` runs the algorithm around them in NumPy.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from facegnet.atomic import atomic_path
from facegnet.deploy.onnx_cache import cache_dir
from facegnet.deploy.onnx_embedder import make_session
from facegnet.errors import ExportError

#: Bumped when the export recipe changes, so that older cached files are not reused.
MTCNN_EXPORT_VERSION = 1
#: name → (facenet-pytorch class, output names, a fixed input side or None for P-Net's any-size input).
NETWORKS = {
    "pnet": ("PNet", ["regression", "probability"], None),
    "rnet": ("RNet", ["regression", "probability"], 24),
    "onet": ("ONet", ["regression", "landmarks", "probability"], 48),
}


def _weights_file(name: str) -> Path:
    import facenet_pytorch

    return Path(facenet_pytorch.__file__).resolve().parent / "data" / f"{name}.pt"


def _weights_key() -> str:
    """A short sha256 over facenet-pytorch's three MTCNN weight files: a new version gets new exports."""
    digest = hashlib.sha256()
    for name in NETWORKS:
        digest.update(_weights_file(name).read_bytes())
    return digest.hexdigest()[:16]


def _export(name: str, path: Path) -> None:
    """Export one facenet-pytorch network (its packaged weights) to ``path`` atomically."""
    from facenet_pytorch.models import mtcnn

    class_name, outputs, side = NETWORKS[name]
    net = getattr(mtcnn, class_name)(pretrained=True).eval()
    example = torch.zeros(2, 3, side or 48, side or 64)
    axes = {"input": {0: "batch"} if side else {0: "batch", 2: "height", 3: "width"}}
    axes.update({out: {0: "batch"} if side else {0: "batch", 2: "h", 3: "w"} for out in outputs})
    try:
        with atomic_path(path, 0o644) as tmp, warnings.catch_warnings(), torch.inference_mode(False), \
                torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    except OSError as exc:
        raise ExportError(f"cannot write the MTCNN export ({exc.strerror or exc.__class__.__name__}); "
                          "set FACEGNET_CACHE", path) from None


def mtcnn_onnx_paths() -> dict[str, Path]:
    """The cached ONNX exports of P-, R- and O-Net, made on first use."""
    folder = cache_dir() / "mtcnn" / f"{_weights_key()}-v{MTCNN_EXPORT_VERSION}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the MTCNN export cache ({exc.strerror}); set FACEGNET_CACHE", folder) \
            from None
    paths = {name: folder / f"{name}.onnx" for name in NETWORKS}
    for name, path in paths.items():
        if not path.is_file():
            _export(name, path)
    return paths


class OrtNet:
    """One MTCNN network (P-, R- or O-Net) run by ONNX Runtime on float32 (N, 3, H, W) arrays."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.session = make_session(path, threads, spin=False)
        self.input = self.session.get_inputs()[0].name

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        """The network's outputs for a float32 (N, 3, H, W) array (what :mod:`facegnet.detection.mtcnn_stages` calls)."""
        return self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})


def ort_networks(threads: int | None = None) -> tuple[OrtNet, OrtNet, OrtNet]:
    """P-, R- and O-Net as :class:`OrtNet` networks (exported into the cache on first use)."""
    paths = mtcnn_onnx_paths()
    return tuple(OrtNet(paths[name], threads) for name in NETWORKS)  # type: ignore[return-value]
