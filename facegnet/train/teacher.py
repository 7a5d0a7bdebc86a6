"""An online distillation teacher: a face embedding network run inside the training loop.

Stored teacher descriptors were computed once, on the clean crop; every augmented view the student sees
(jitter, erasing, mixup, low resolution) was then pulled towards a vector that was never computed for it.
:class:`OnlineTeacher` embeds exactly the batch the student sees, so each view gets its own target
("function matching").

The teacher is an OpenVINO IR such as Open Model Zoo's ``face-reidentification-retail-0095`` (input
(N, 3, 128, 128) BGR 0–255 on the SphereFace 96×112 template stretched to 128×128). Our crops use the ArcFace
112×112 template, which is the 96×112 one shifted right by 8 px, so the teacher's input is one axis-aligned
resampling of the crop, done here on the whole batch. ``openvino`` is a training-only dependency
(``pip install facegnet[train]``); nothing a user runs needs it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegnet.card import sha256_file
from facegnet.errors import DataError, FacegnetError

TEACHER_SIZE = 128


def teacher_input(x: torch.Tensor, size: int = TEACHER_SIZE) -> torch.Tensor:
    """Normalised RGB (N, 3, 112, 112) crops in [-1, 1] → the teacher's (N, 3, size, size) BGR 0–255 input.

    Output pixel (u, v) samples the crop at x = 8 + u·96/size, y = v·112/size, the same mapping as
    ``cv2.warpAffine(crop, [[4/3, 0, -32/3], [0, 8/7, 0]], (128, 128))`` for size 128.
    """
    n, _, h, w = x.shape
    u = torch.arange(size, dtype=torch.float32, device=x.device)
    src_x = 8.0 + u * (96.0 / size)
    src_y = u * (112.0 / size)
    # grid_sample with align_corners=True maps -1..1 onto pixel centres 0..w-1.
    gx = src_x / (w - 1) * 2 - 1
    gy = src_y / (h - 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).expand(n, size, size, 2)
    rgb = (x.float() + 1.0) * 127.5
    out = F.grid_sample(rgb, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.flip(1).clamp_(0, 255)  # RGB → BGR


ENGINES = ("auto", "openvino", "torch")


class OnlineTeacher:
    """A face embedder (OpenVINO IR) called on training batches; returns L2-normalised (N, D) float32 vectors.

    Two engines run the same IR: ``openvino`` on the CPU (the default there: fastest on a CPU), and ``torch``
    (:class:`facegnet.train.ir_torch.IRNetwork`, on ``device``: the default on a GPU, so the teacher keeps up with
    the student there and needs no OpenVINO). Their embeddings agree to a cosine of 0.9999 (OpenVINO may
    compute in bfloat16 where the CPU has it).
    """

    def __init__(self, xml: str | Path, threads: int = 0, device: str | torch.device = "cpu",
                 engine: str = "auto") -> None:
        xml = Path(xml)
        if xml.is_dir():
            found = sorted(xml.glob("*.xml"))
            if len(found) != 1:
                raise DataError("teacher folder must hold exactly one OpenVINO .xml model", xml)
            xml = found[0]
        if not xml.exists():
            raise DataError("teacher model not found", xml)
        weights = xml.with_suffix(".bin")
        if not weights.exists():
            raise DataError("teacher weights (.bin beside the .xml) not found", weights)
        if engine not in ENGINES:
            raise DataError(f"teacher engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        self.device = torch.device(device)
        if engine == "auto":
            engine = "torch" if self.device.type != "cpu" else "openvino"
        self.engine = engine
        self.path = xml
        self.sha256 = sha256_file(weights)
        if engine == "torch":
            from facegnet.train.ir_torch import IRNetwork

            try:
                self._net = IRNetwork(xml).eval().to(self.device)
            except FacegnetError as exc:
                raise DataError(f"cannot load the teacher ({exc.reason})", xml) from None
            with torch.no_grad():
                probe = self._net(torch.zeros(1, 3, TEACHER_SIZE, TEACHER_SIZE, device=self.device))
            self.dim = int(probe[0].numel())
            return
        try:
            import openvino as ov
        except ImportError:
            raise DataError("the online teacher needs OpenVINO on a CPU: pip install 'facegnet[train]' "
                            "(or --teacher-engine torch)") from None
        core = ov.Core()
        try:
            model = core.read_model(str(xml))
            model.reshape([-1, 3, TEACHER_SIZE, TEACHER_SIZE])
            config = {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long messages
            raise DataError(f"cannot load the teacher ({str(exc).splitlines()[0][:120]})", xml) from None
        self.dim = int(np.prod(self._compiled.outputs[0].get_partial_shape().get_min_shape()[1:]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher embeddings of normalised RGB crops (N, 3, 112, 112): on the teacher's device for the torch
        engine, on the CPU for OpenVINO."""
        with torch.no_grad():
            if self.engine == "torch":
                out = self._net(teacher_input(x.detach().float().to(self.device)))
                return F.normalize(out.reshape(len(x), -1).float(), dim=1)
            batch = teacher_input(x.detach().float().cpu()).numpy()
        out = self._compiled(batch)[0].reshape(len(batch), -1)
        return F.normalize(torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)), dim=1)

    def mean_embedding(self, images: np.ndarray, count: int = 2048, seed: int = 0, batch: int = 256) -> np.ndarray:
        """The teacher's mean vector over a fixed sample of uint8 (N, 112, 112, 3) crops (for centring)."""
        from facegnet.train.datasets import to_input

        rng = np.random.default_rng(seed)
        index = np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))
        total = np.zeros(self.dim, dtype=np.float64)
        for i in range(0, len(index), batch):
            emb = self(to_input(torch.from_numpy(images[index[i : i + batch]])))
            total += emb.double().sum(0).cpu().numpy()
        return (total / max(1, len(index))).astype(np.float32)
