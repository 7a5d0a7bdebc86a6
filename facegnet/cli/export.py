"""``facegnet export --format onnx|torchscript OUT [--int8] [--weights W]``: the embedding network for deployment."""
from __future__ import annotations

import argparse
from pathlib import Path

from facegnet.cli.common import warn


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the embedding network to ONNX (fp32 or int8) or TorchScript",
        description="Write the embedding network as ONNX (dynamic batch, checked with the ONNX checker) or "
        "TorchScript, with its model card beside it (same name, .json). The graph takes float32 (N, 3, 112, 112) "
        "crops normalised as the card says and returns raw 512-d embeddings (flip and L2 normalisation are the "
        "caller's).",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="file to write (.onnx; .pt or .ts for TorchScript)")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default: onnx")
    parser.add_argument("--int8", action="store_true",
                        help="ONNX only: static int8 quantization (activation ranges shipped with the weights, "
                        "measured on training-pack crops; or --calibration)")
    parser.add_argument("--weights", default=None,
                        help="model card name, card (.json) or weights (.pt); default: the shipped model")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    parser.add_argument("--calibration", type=Path, metavar="DIR",
                        help="with --int8: calibrate on the training pack or a folder of aligned 112×112 crops "
                        "(never LFW; default: $FACEGNET_CALIBRATION, else the ranges shipped with the weights)")
    parser.add_argument("--calibration-count", type=int, default=None, metavar="N",
                        help="with --int8: crops used for calibration (default: 256)")
    parser.add_argument("--quant-format", choices=["qdq", "qoperator"], default=None,
                        help="with --int8: ONNX quantization layout (default: qdq)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facegnet.card import resolve_card
    from facegnet.deploy.exporter import (
        CALIBRATION_COUNT,
        DEFAULT_QUANT_FORMAT,
        ONNX_OPSET,
        ExportError,
        card_path_for,
        export_onnx,
        export_torchscript,
    )

    if args.format == "torchscript":
        used = [flag for flag, value in (("--int8", args.int8), ("--opset", args.opset),
                                          ("--calibration", args.calibration),
                                          ("--quant-format", args.quant_format)) if value]
        if used:
            raise ExportError(f"{', '.join(used)} only apply to --format onnx", args.out)
    card = resolve_card(args.weights)
    if args.format == "onnx":
        path = export_onnx(
            card,
            args.out,
            int8=args.int8,
            opset=args.opset or ONNX_OPSET,
            calibration=args.calibration,
            calibration_count=args.calibration_count or CALIBRATION_COUNT,
            quant_format=args.quant_format or DEFAULT_QUANT_FORMAT,
        )
    else:
        path = export_torchscript(card, args.out)
    if not card.trained:
        warn("no trained weights are installed: exported the untrained network, its embeddings mean nothing")
    kind = "ONNX int8" if args.int8 else ("ONNX" if args.format == "onnx" else "TorchScript")
    print(f"{kind}: {path} ({path.stat().st_size / 1e6:.1f} MB); model card: {card_path_for(path)}")
    return 0
