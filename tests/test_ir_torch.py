"""facegnet.train.ir_torch: an OpenVINO IR run by PyTorch (the online teacher on a GPU), against OpenVINO itself
and against a hand-built IR whose result is computed here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegnet.errors import WeightsError
from facegnet.train.ir_torch import IRNetwork

TEACHER = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "face-reidentification-retail-0095"
PACK = TEACHER.parents[1] / "data" / "train"


def _port(pid: int, dims: list[int]) -> str:
    return f'<port id="{pid}" precision="FP32">' + "".join(f"<dim>{d}</dim>" for d in dims) + "</port>"


def _write_ir(folder: Path, extra_op: str | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
    """Parameter (1,2,6,6) → Convolution 3×3 stride 2 pad 1 (3 out, FP16 weights) → PReLU (per channel) →
    AvgPool 3×3 → Result: the smallest IR that uses constants, conversion, padding, broadcasting and pooling."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 2, 3, 3)).astype(np.float16)
    slope = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    blob = weight.tobytes() + slope.tobytes()
    (folder / "net.bin").write_bytes(blob)
    kind = extra_op or "AvgPool"
    layers = f"""
<layer id="0" name="x" type="Parameter" version="opset1"><data shape="1,2,6,6" element_type="f32"/>
  <output>{_port(0, [1, 2, 6, 6])}</output></layer>
<layer id="1" name="w" type="Const" version="opset1"><data element_type="f16" shape="3, 2, 3, 3" offset="0" size="108"/>
  <output>{_port(0, [3, 2, 3, 3])}</output></layer>
<layer id="2" name="w32" type="Convert" version="opset1"><data destination_type="f32"/>
  <input>{_port(0, [3, 2, 3, 3])}</input><output>{_port(1, [3, 2, 3, 3])}</output></layer>
<layer id="3" name="conv" type="Convolution" version="opset1">
  <data strides="2, 2" dilations="1, 1" pads_begin="1, 1" pads_end="1, 1" auto_pad="explicit"/>
  <input>{_port(0, [1, 2, 6, 6])}{_port(1, [3, 2, 3, 3])}</input><output>{_port(2, [1, 3, 3, 3])}</output></layer>
<layer id="4" name="s" type="Const" version="opset1"><data element_type="f32" shape="3" offset="108" size="12"/>
  <output>{_port(0, [3])}</output></layer>
<layer id="5" name="prelu" type="PReLU" version="opset1">
  <input>{_port(0, [1, 3, 3, 3])}{_port(1, [3])}</input><output>{_port(2, [1, 3, 3, 3])}</output></layer>
<layer id="6" name="pool" type="{kind}" version="opset1">
  <data kernel="3, 3" strides="3, 3" pads_begin="0, 0" pads_end="0, 0" exclude-pad="true" auto_pad="explicit" rounding_type="floor"/>
  <input>{_port(0, [1, 3, 3, 3])}</input><output>{_port(1, [1, 3, 1, 1])}</output></layer>
<layer id="7" name="out" type="Result" version="opset1"><input>{_port(0, [1, 3, 1, 1])}</input></layer>"""
    edges = [(0, 0, 3, 0), (1, 0, 2, 0), (2, 1, 3, 1), (3, 2, 5, 0), (4, 0, 5, 1), (5, 2, 6, 0), (6, 1, 7, 0)]
    xml = ('<?xml version="1.0" ?><net name="t" version="11"><layers>' + layers + "</layers><edges>"
           + "".join(f'<edge from-layer="{a}" from-port="{b}" to-layer="{c}" to-port="{d}"/>' for a, b, c, d in edges)
           + "</edges></net>")
    (folder / "net.xml").write_text(xml)
    return folder / "net.xml", weight.astype(np.float32), slope


def test_a_hand_built_ir_computes_what_its_graph_says(tmp_path: Path) -> None:
    xml, weight, slope = _write_ir(tmp_path)
    net = IRNetwork(tmp_path)  # a folder with one .xml is accepted too
    x = torch.randn(4, 2, 6, 6)
    y = F.conv2d(x, torch.from_numpy(weight), stride=2, padding=1)
    y = torch.where(y >= 0, y, y * torch.from_numpy(slope).view(1, 3, 1, 1))
    expected = F.avg_pool2d(y, 3, 3)
    assert torch.allclose(net(x), expected, atol=1e-5)
    assert net.path == xml


def test_an_unsupported_operation_is_refused_by_name(tmp_path: Path) -> None:
    _write_ir(tmp_path, extra_op="Softmax")
    with pytest.raises(WeightsError, match="not supported here: Softmax"):
        IRNetwork(tmp_path / "net.xml")
    with pytest.raises(WeightsError, match="cannot read"):
        IRNetwork(tmp_path / "missing.xml")


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not (TEACHER.exists() and PACK.exists() and _has_openvino()),
                    reason="needs ../shared's teacher and training pack, and openvino")
def test_the_face_teacher_in_pytorch_equals_openvino() -> None:
    import openvino as ov

    from facegnet.train import datasets as D
    from facegnet.train.teacher import OnlineTeacher, teacher_input

    faces = D.load_pack(PACK, "train", 2, teacher=None, limit=12)
    crops = D.to_input(torch.from_numpy(faces.images))
    x = teacher_input(crops)
    with torch.no_grad():
        ours = F.normalize(IRNetwork(TEACHER).eval()(x).reshape(len(x), -1), dim=1).numpy()
    core = ov.Core()
    model = core.read_model(str(next(TEACHER.glob("*.xml"))))
    model.reshape([-1, 3, 128, 128])
    exact = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0].reshape(len(x), -1)
    exact /= np.linalg.norm(exact, axis=1, keepdims=True)
    assert (ours * exact).sum(1).min() > 0.99999  # the same network, the same arithmetic
    # The trainer's two engines: the same targets (OpenVINO may run in bfloat16 where the CPU has it).
    torch_engine = OnlineTeacher(TEACHER, engine="torch")
    openvino_engine = OnlineTeacher(TEACHER, threads=1, engine="openvino")
    assert torch_engine.dim == openvino_engine.dim == 256 and torch_engine.sha256 == openvino_engine.sha256
    assert (torch_engine(crops) * openvino_engine(crops)).sum(1).min() > 0.999


@pytest.mark.skipif(not (TEACHER.exists() and PACK.exists()), reason="needs ../shared's teacher and training pack")
def test_training_with_the_teacher_in_pytorch(tmp_path: Path) -> None:
    """The GPU path's teacher, exercised on the CPU: no OpenVINO call, targets on the training device."""
    import json

    from facegnet.train.trainer import TrainConfig, train

    small = {"width": 0.5, "stem_stride": 2, "prelu": True, "dfc": False, "embedding_size": 64, "dropout": 0.0}
    cfg = TrainConfig(data=str(PACK), out=str(tmp_path / "run"), model=small, head="cosface", distill="cosine",
                      teacher="none", teacher_model=str(TEACHER), teacher_engine="torch", steps=2, batch_size=8,
                      limit=64, dev_pairs="none", warmup_steps=1, threads=1, mixup=0.5)
    summary = train(cfg, progress=False)
    assert summary["step"] == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "online" in r]
    assert steps and all(np.isfinite(r["online"]) and 0 <= r["online"] <= 2 for r in steps)
