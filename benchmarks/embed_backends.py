#!/usr/bin/env python3
"""Embedding speed of each back-end on this CPU; writes benchmarks/results/embed_backends.{json,md}.

For PyTorch fp32, PyTorch bf16 (autocast), ONNX Runtime fp32 and ONNX Runtime int8 (QDQ and QOperator layouts):
per-face latency at batch 1 (ms) and throughput at batch 64 (faces/s), one network pass per face (no flip TTA;
the pipeline's default flip doubles both), the cosine of each back-end's embeddings to PyTorch fp32's on the
same crops, and the model file sizes. dlib's face encoder (``face_recognition``) is measured in the same run
when it imports, on 150×150 chips (its input size), with one BLAS thread; it is never a facegnet dependency.

Crops are aligned faces of the training pack (``../shared/data/train``; the int8 models are calibrated on other
crops of its train split). Timings are interleaved round-robin across back-ends, so that load from other
processes hits every back-end alike; each figure is the median of the repeats.

With ``--widths 0.5,0.3`` the same run also times ONNX Runtime fp32 on narrower GhostFaceNets (same stem and
head; untrained weights, since speed does not depend on them): how much cheaper a network would have to be.

    python benchmarks/embed_backends.py [--weights W] [--threads 1,2] [--repeats R] [--widths 0.5,0.3] [--smoke]
                                        [--out PREFIX]
"""
from __future__ import annotations

import os

# One BLAS thread for dlib (and numpy), as the comparison asks; OpenBLAS reads this only when it is loaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import json
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from facegnet.card import ModelCard, resolve_card, untrained_card
from facegnet.deploy.exporter import (
    CALIBRATION_COUNT,
    calibration_crops,
    default_calibration_dir,
    export_onnx,
    export_torchscript,
)
from facegnet.deploy.onnx_embedder import OnnxEmbedder
from facegnet.embed import Embedder

HERE = Path(__file__).resolve().parent
# A Python process running `facegnet train` (as `python -m facegnet` or the console script), not any shell line
# that merely mentions the words (a loop waiting for training to end).
TRAINING_PROCESS = r"python[0-9.]* (-m facegnet|[^ ]*/facegnet) train"


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f or f == "fma")
    return []


def benchmark_crops(count: int, pack: Path | None) -> np.ndarray:
    """Aligned dev-split crops of the training pack (not the calibration ones), or smooth noise without it."""
    if pack is not None and (pack / "manifest.csv").is_file():
        import csv

        from PIL import Image

        with open(pack / "manifest.csv", newline="") as handle:
            rows = [row["crop"] for row in csv.DictReader(handle) if row["split"] == "dev"]
        picks = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, count)]
        return np.stack([np.asarray(Image.open(pack / p).convert("RGB")) for p in picks])
    rng = np.random.default_rng(0)
    return np.repeat(np.repeat(rng.integers(0, 256, (count, 14, 14, 3), dtype=np.uint8), 8, 1), 8, 2)


class Bf16Embedder:
    """PyTorch embedder under CPU autocast to bfloat16 (convolutions in bf16, output cast back to float)."""

    def __init__(self, card: ModelCard, **options) -> None:
        self.inner = Embedder(card, **options)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.inner(crops)


def dlib_encoder(threads: int) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """dlib's ResNet face encoder over 150×150 chips, or None and why not."""
    import importlib.util

    try:
        import dlib
    except ImportError as exc:
        return None, (f"skipped: dlib does not import here ({exc.__class__.__name__}: {exc}); install it (built "
                      "against libopenblas-dev) and face_recognition_models only for this benchmark and rerun")
    # The weights face_recognition uses, found without importing face_recognition_models (it needs the
    # pkg_resources module that recent setuptools no longer ships).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None, "skipped: face_recognition_models is not installed (pip install face_recognition_models)"
    model = Path(list(spec.submodule_search_locations)[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    from PIL import Image

    encoder = dlib.face_recognition_model_v1(str(model))

    def encode(crops: np.ndarray) -> np.ndarray:
        chips = [np.asarray(Image.fromarray(c).resize((150, 150), Image.BILINEAR)) for c in crops]
        return np.asarray(encoder.compute_face_descriptor(chips), dtype=np.float32)

    blas = "OpenBLAS" if _links_openblas(dlib) else "no BLAS found in its library"
    return encode, (f"dlib {dlib.__version__} ({blas}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}), "
                    "face_recognition_models ResNet, 150×150 chips, one pass per face (face_recognition's "
                    "default num_jitters=1)")


def _links_openblas(module) -> bool:
    """Whether dlib's compiled library links a BLAS (dlib is ~4× slower without one)."""
    import sys

    binding = sys.modules.get("_dlib_pybind11") or module
    library = getattr(binding, "__file__", None)
    if not library:
        return False
    found = subprocess.run(["ldd", library], capture_output=True, text=True).stdout
    return "blas" in found.lower()


def width_variant(card: ModelCard, width: float) -> ModelCard:
    """The untrained card of ``card``'s architecture at another width (for timing only)."""
    variant = untrained_card()
    variant.name = f"untrained-width-{width:g}"
    variant.config = {**card.config, "width": width}
    return variant


def macs_per_face(card: ModelCard) -> float:
    """Millions of multiply-accumulates of one forward pass (convolutions and linear layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    from facegnet.models import build_from_card

    net = build_from_card(card).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, card.input_size, card.input_size))
    return counter.get_total_flops() / 2e6


def file_sizes(card: ModelCard, folder: Path, exports: dict[str, Path]) -> dict[str, float]:
    sizes = {}
    weights = card.weights_path
    if weights is None or not weights.is_file():  # the untrained network: what its state_dict would weigh
        from facegnet.models import build_from_card

        weights = folder / "state_dict.pt"
        torch.save(build_from_card(card).state_dict(), weights)
    sizes["PyTorch weights (.pt)"] = weights.stat().st_size
    for name, path in exports.items():
        sizes[name] = path.stat().st_size
    return {k: round(v / 1e6, 2) for k, v in sizes.items()}


def run_round_robin(tasks: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each task, the tasks interleaved in each round (after one warm-up round)."""
    for fn in tasks.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(repeats):
        for name, fn in tasks.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="model card name or path (default: the active weights)")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts to measure (default: 1)")
    parser.add_argument("--repeats", type=int, default=7, help="rounds at batch 64 (batch 1 runs 5× as many)")
    parser.add_argument("--calibration", type=Path, default=None, help="int8 calibration crops (default: the pack)")
    parser.add_argument("--widths", default="", help="comma-separated narrower widths to time as well (untrained)")
    parser.add_argument("--smoke", action="store_true", help="tiny run to check the script (figures meaningless)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "embed_backends",
                        help="output prefix (.json and .md are added)")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    widths = [float(w) for w in args.widths.split(",") if w.strip()]
    repeats = 1 if args.smoke else args.repeats
    batch_size = 8 if args.smoke else 64
    card = resolve_card(args.weights)
    pack = args.calibration or default_calibration_dir() or (HERE.parent.parent / "shared" / "data" / "train")
    crops = benchmark_crops(batch_size, pack)
    training = subprocess.run(["pgrep", "-f", TRAINING_PROCESS], capture_output=True, text=True).stdout.strip()

    results: dict = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "flags": cpu_flags(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                    "other_training_run": bool(training)},
        "versions": {"torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": {"card": card.name, "trained": card.trained, "sha256": card.fingerprint,
                  "mmacs_per_face": round(macs_per_face(card), 1)},
        "protocol": f"batch 1: median ms per call over {5 * repeats} calls; batch {batch_size}: median over "
                    f"{repeats} calls; one network pass per face (no flip TTA); back-ends interleaved",
        "smoke": args.smoke,
    }
    with tempfile.TemporaryDirectory(prefix="facegnet-bench-") as scratch:
        folder = Path(scratch)
        calib = calibration_crops(pack, 16 if args.smoke else CALIBRATION_COUNT, card.input_size)
        exports = {
            "ONNX fp32": export_onnx(card, folder / "fp32.onnx"),
            "ONNX int8 QDQ": export_onnx(card, folder / "int8-qdq.onnx", int8=True, calibration=calib,
                                         quant_format="qdq"),
            "ONNX int8 QOperator": export_onnx(card, folder / "int8-qop.onnx", int8=True, calibration=calib,
                                               quant_format="qoperator"),
            "TorchScript": export_torchscript(card, folder / "net.pt"),
        }
        results["file_size_MB"] = file_sizes(card, folder, exports)
        variants = {}
        for width in widths:
            variant = width_variant(card, width)
            name = f"ONNX Runtime fp32, width {width:g} ({macs_per_face(variant):.1f} MMAC, untrained)"
            variants[name] = (variant, export_onnx(variant, folder / f"width-{width:g}.onnx"))
        import onnxruntime

        results["versions"]["onnxruntime"] = onnxruntime.__version__
        by_threads = {}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            options = {"flip": False, "batch_size": batch_size}
            backends: dict[str, Callable[[np.ndarray], np.ndarray]] = {
                "PyTorch fp32": Embedder(card, **options),
                "PyTorch bf16 autocast": Bf16Embedder(card, **options),
                "ONNX Runtime fp32": OnnxEmbedder(card, model=exports["ONNX fp32"], threads=threads, **options),
                "ONNX Runtime int8 QDQ": OnnxEmbedder(card, model=exports["ONNX int8 QDQ"], threads=threads,
                                                      **options),
                "ONNX Runtime int8 QOperator": OnnxEmbedder(card, model=exports["ONNX int8 QOperator"],
                                                            threads=threads, **options),
            }
            for name, (variant, path) in variants.items():
                backends[name] = OnnxEmbedder(variant, model=path, threads=threads, **options)
            encode, dlib_note = dlib_encoder(threads)
            if encode is not None:
                backends["dlib ResNet (face_recognition)"] = encode
            reference = backends["PyTorch fp32"](crops)
            rows = {}
            for name, fn in backends.items():
                out = fn(crops)
                rows[name] = {}
                if name in variants:  # another network: nothing to compare with
                    continue
                if not name.startswith("dlib"):
                    cos = (out * reference).sum(1)
                    rows[name]["cosine_to_fp32_mean"] = round(float(cos.mean()), 5)
                    rows[name]["cosine_to_fp32_min"] = round(float(cos.min()), 5)
            one = run_round_robin({n: (lambda f=f: f(crops[:1])) for n, f in backends.items()}, 5 * repeats)
            many = run_round_robin({n: (lambda f=f: f(crops)) for n, f in backends.items()}, repeats)
            for name in backends:
                rows[name]["ms_per_face_batch1"] = round(1000 * one[name], 2)
                rows[name][f"faces_per_s_batch{batch_size}"] = round(batch_size / many[name], 1)
            base = rows.get("dlib ResNet (face_recognition)")
            for name, row in rows.items():
                if base:
                    row["speedup_vs_dlib_batch1"] = round(base["ms_per_face_batch1"] / row["ms_per_face_batch1"], 1)
            by_threads[str(threads)] = {"backends": rows, "dlib": dlib_note}
        results["threads"] = by_threads

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    machine = results["machine"]
    lines = [
        f"# Embedding back-ends on this CPU ({results['date']})",
        "",
        f"{machine['cpu']}, {machine['cores']} cores ({', '.join(machine['flags'])}); torch "
        f"{results['versions']['torch']}, onnxruntime {results['versions']['onnxruntime']}. Model: "
        f"{card.name} ({'trained' if card.trained else 'untrained network'}, "
        f"{results['model']['mmacs_per_face']} MMAC per face). {results['protocol']}.",
    ]
    if machine["other_training_run"] or args.smoke:
        lines += ["", "**Not representative**: " + ("smoke run. " if args.smoke else "")
                  + ("a training run was using the CPU." if machine["other_training_run"] else "")]
    for threads, block in by_threads.items():
        lines += ["", f"## {threads} thread{'s' if threads != '1' else ''}", "",
                  f"| back-end | ms/face, batch 1 | faces/s, batch {batch_size} | cosine to fp32 (mean / min) |"
                  + (" × faster than dlib (batch 1) |" if block['dlib'].startswith("dlib") else ""),
                  "|---|---|---|---|" + ("---|" if block['dlib'].startswith("dlib") else "")]
        for name, row in block["backends"].items():
            cos = (f"{row['cosine_to_fp32_mean']:.5f} / {row['cosine_to_fp32_min']:.5f}"
                   if "cosine_to_fp32_mean" in row
                   else "n/a (timing only)" if "untrained" in name else "n/a (other embedding space)")
            line = f"| {name} | {row['ms_per_face_batch1']} | {row[f'faces_per_s_batch{batch_size}']} | {cos} |"
            if "speedup_vs_dlib_batch1" in row:
                line += f" {row['speedup_vs_dlib_batch1']} |"
            lines.append(line)
        lines += ["", f"dlib: {block['dlib']}"]
    lines += ["", "| file | MB |", "|---|---|"] + [f"| {k} | {v} |" for k, v in results["file_size_MB"].items()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
