"""An OpenVINO IR network (``.xml`` + ``.bin``) run by PyTorch, so a teacher can run on a GPU beside the student.

OpenVINO runs the distillation teacher on the CPU; on a GPU machine that would starve the GPU (on an H200 the
trainer ran at 2.5–2.9k images/s). :class:`IRNetwork` reads the IR's graph and weights (its constants, FP16 or
FP32) and executes the same operations with ``torch.nn.functional``, on whatever device it is moved to. It
covers the operations of convolutional embedders such as ``face-reidentification-retail-0095``: Parameter,
Const, Convert, Convolution, GroupConvolution, Add, Multiply, PReLU, Sigmoid, ReLU, Clamp, AvgPool, MaxPool,
Reshape and Result; any other operation is refused by name when the file is read. Tested equal to OpenVINO's
output on CPU (tests/test_ir_torch.py).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegnet.errors import WeightsError

__all__ = ["IRNetwork", "SUPPORTED"]

DTYPES = {"f16": np.float16, "f32": np.float32, "i64": np.int64, "i32": np.int32, "u8": np.uint8}
TORCH_DTYPES = {"f16": torch.float16, "f32": torch.float32, "i64": torch.int64, "i32": torch.int32}
SUPPORTED = ("Parameter", "Const", "Convert", "Convolution", "GroupConvolution", "Add", "Multiply", "PReLU",
             "Sigmoid", "ReLU", "Clamp", "AvgPool", "MaxPool", "Reshape", "Result")


def _ints(text: str | None) -> list[int]:
    return [int(v) for v in text.replace(" ", "").split(",") if v] if text else []


class IRNetwork(nn.Module):
    """The network of an OpenVINO IR file, as a PyTorch module: ``forward(x)`` returns the IR's one output.

    ``x`` is what the IR's Parameter takes (for the face teacher: (N, 3, 128, 128) BGR, 0–255).
    """

    def __init__(self, xml: str | Path) -> None:
        super().__init__()
        xml = Path(xml)
        if xml.is_dir():
            found = sorted(xml.glob("*.xml"))
            if not found:
                raise WeightsError("no OpenVINO .xml file in this folder", xml)
            xml = found[0]
        weights = xml.with_suffix(".bin")
        try:
            root = ET.parse(xml).getroot()
            blob = weights.read_bytes()
        except (OSError, ET.ParseError) as exc:
            raise WeightsError(f"cannot read the OpenVINO IR ({exc.__class__.__name__})", xml) from None
        layers = {layer.get("id"): layer for layer in root.find("layers")}
        self.inputs: dict[str, dict[str, tuple[str, str]]] = {lid: {} for lid in layers}
        for edge in root.find("edges"):
            self.inputs[edge.get("to-layer")][edge.get("to-port")] = (edge.get("from-layer"), edge.get("from-port"))
        unknown = sorted({layer.get("type") for layer in layers.values()} - set(SUPPORTED))
        if unknown:
            raise WeightsError(f"OpenVINO operations not supported here: {', '.join(unknown)}", xml)
        self.nodes: list[tuple[str, str, dict[str, str]]] = []  # (id, type, data attributes) in execution order
        # Every supported operation has one output port; edges name it.
        self.output_port = {lid: (layer.find("output")[0].get("id") if layer.find("output") is not None else "0")
                            for lid, layer in layers.items()}
        self.parameter = self.result = None
        for lid in self._order(layers):
            layer = layers[lid]
            kind = layer.get("type")
            data = dict(layer.find("data").attrib) if layer.find("data") is not None else {}
            if kind == "Const":
                dtype = DTYPES[data["element_type"]]
                offset, size = int(data["offset"]), int(data["size"])
                array = np.frombuffer(blob, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset)
                tensor = torch.from_numpy(array.reshape(_ints(data.get("shape")) or ()).copy())
                self.register_buffer(f"const_{lid}", tensor)
            elif kind == "Parameter":
                self.parameter = lid
            elif kind == "Result":
                self.result = lid
            self.nodes.append((lid, kind, data))
        if self.parameter is None or self.result is None:
            raise WeightsError("the IR has no input Parameter or no Result", xml)
        self.path = xml

    def _order(self, layers: dict[str, Any]) -> list[str]:
        """Layer ids so that every layer comes after the layers it reads (Kahn's algorithm)."""
        needs = {lid: {src for src, _ in self.inputs[lid].values()} for lid in layers}
        users: dict[str, list[str]] = {lid: [] for lid in layers}
        for lid, sources in needs.items():
            for src in sources:
                users[src].append(lid)
        ready = sorted((lid for lid, sources in needs.items() if not sources), key=int)
        order = []
        while ready:
            lid = ready.pop(0)
            order.append(lid)
            for user in users[lid]:
                needs[user].discard(lid)
                if not needs[user]:
                    ready.append(user)
        if len(order) != len(layers):
            raise WeightsError("the IR's graph has a cycle")
        return order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[tuple[str, str], torch.Tensor] = {}
        for lid, kind, data in self.nodes:
            args = [values[self.inputs[lid][port]] for port in sorted(self.inputs[lid], key=int)]
            if kind == "Parameter":
                out = x
            elif kind == "Const":
                out = getattr(self, f"const_{lid}")
            elif kind == "Result":
                return args[0]
            else:
                out = self._run_op(kind, data, args)
            values[(lid, self.output_port[lid])] = out
        raise WeightsError("the IR's Result was never reached")

    @staticmethod
    def _pads(data: dict[str, str], x: torch.Tensor) -> tuple[torch.Tensor, int | tuple[int, int]]:
        """Explicit padding: symmetric pads go to the operation, asymmetric ones are applied here."""
        if data.get("auto_pad", "explicit") not in ("explicit", "notset", "valid"):
            raise WeightsError(f"auto_pad={data['auto_pad']} is not supported here")
        if data.get("auto_pad") == "valid":
            return x, 0
        begin, end = _ints(data.get("pads_begin")) or [0, 0], _ints(data.get("pads_end")) or [0, 0]
        if begin == end:
            return x, tuple(begin)
        return F.pad(x, (begin[1], end[1], begin[0], end[0])), 0

    def _run_op(self, kind: str, data: dict[str, str], args: list[torch.Tensor]) -> torch.Tensor:
        if kind == "Convert":
            return args[0].to(TORCH_DTYPES[data["destination_type"]])
        if kind in ("Convolution", "GroupConvolution"):
            x, weight = args
            groups = 1
            if kind == "GroupConvolution":  # (G, out/G, in/G, kh, kw) → (out, in/G, kh, kw)
                groups = weight.shape[0]
                weight = weight.reshape(-1, *weight.shape[2:])
            x, padding = self._pads(data, x)
            return F.conv2d(x, weight.to(x.dtype), None, _ints(data["strides"]), padding,
                            _ints(data.get("dilations")) or 1, groups)
        if kind == "Add":
            return args[0] + args[1]
        if kind == "Multiply":
            return args[0] * args[1]
        if kind == "PReLU":
            x, slope = args
            slope = slope.reshape(-1)
            if slope.numel() > 1 and x.dim() > 2:
                slope = slope.reshape(1, -1, *([1] * (x.dim() - 2)))
            return torch.where(x >= 0, x, x * slope.to(x.dtype))
        if kind == "Sigmoid":
            return torch.sigmoid(args[0])
        if kind == "ReLU":
            return F.relu(args[0])
        if kind == "Clamp":
            return args[0].clamp(float(data["min"]), float(data["max"]))
        if kind in ("AvgPool", "MaxPool"):
            x, padding = self._pads(data, args[0])
            kernel, stride = _ints(data["kernel"]), _ints(data["strides"])
            ceil = data.get("rounding_type", "floor") == "ceil"
            if kind == "MaxPool":
                return F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil)
            return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil,
                                count_include_pad=data.get("exclude-pad", "false") != "true")
        if kind == "Reshape":
            shape = [int(v) for v in args[1].tolist()]
            if data.get("special_zero", "false") == "true":
                shape = [args[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
            return args[0].reshape(shape)
        raise WeightsError(f"OpenVINO operation {kind} is not supported here")
