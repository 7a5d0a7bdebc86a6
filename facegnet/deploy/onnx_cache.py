"""Where ONNX exports live and how their cards are read: the part of exporting that needs no PyTorch.

:mod:`facegnet.deploy.exporter` (PyTorch, onnx) writes exports; :mod:`facegnet.deploy.onnx_embedder` (ONNX Runtime only) runs
them. Both find them here: an export's card sits beside it (same stem, ``.json``), and the exports made on
first use are cached in ``~/.cache/facegnet/onnx`` (or ``$FACEGNET_CACHE/onnx``) under the weights' sha256.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from facegnet.card import ModelCard, read_card_json, sha256_file
from facegnet.errors import ExportError

#: Bumped whenever the export recipe changes, so that cached exports made by older code are not reused.
EXPORT_VERSION = 2  # 2: int8 exports record their calibration (int8_calibration)
#: Default int8 layout: QDQ measured faster than QOperator on this CPU (benchmarks/embed_backends.py).
DEFAULT_QUANT_FORMAT = "qdq"
INPUT_NAME, OUTPUT_NAME = "input", "embedding"


def card_path_for(path: str | Path) -> Path:
    """Where the card of an export lives: beside it, same stem, ``.json``."""
    return Path(path).with_suffix(".json")


def read_export_card(path: str | Path) -> dict[str, Any]:
    """The card of an export (given the export or its card), as a dict; ExportError when missing or unreadable."""
    return read_card_json(card_path_for(path), "format", ExportError, missing="no model card beside the export",
                          wrong="not the card of an export")


def cache_dir() -> Path:
    """``$FACEGNET_CACHE`` or ``~/.cache/facegnet``."""
    env = os.environ.get("FACEGNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "facegnet"


def cache_key(card: ModelCard) -> str:
    """The weights' sha256; for the untrained network (one fingerprint for every config) a hash of its config."""
    if card.trained:
        return card.fingerprint
    described = json.dumps([card.fingerprint, card.architecture, card.config, card.input_size,
                            card.embedding_size], sort_keys=True)
    return "untrained-" + hashlib.sha256(described.encode()).hexdigest()[:16]


def cached_onnx_path(card: ModelCard, int8: bool = False) -> Path:
    """Where :func:`facegnet.deploy.exporter.cached_onnx` keeps the export of ``card``'s weights."""
    variant = f"int8-{DEFAULT_QUANT_FORMAT}" if int8 else "fp32"
    return cache_dir() / "onnx" / f"{cache_key(card)}-{variant}-v{EXPORT_VERSION}.onnx"


def cache_valid(path: Path, card: ModelCard) -> bool:
    """Whether ``path`` is an intact export of ``card``'s weights (its card names them, its sha256 matches)."""
    if not path.is_file():
        return False
    try:
        data = read_export_card(path)
    except ExportError:
        return False
    return data.get("source_sha256") == card.fingerprint and data.get("file_sha256") == sha256_file(path)


def find_cached(card: ModelCard, int8: bool = False) -> Path | None:
    """The cached export of ``card``'s weights when one is there and intact, else None (nothing is made)."""
    path = cached_onnx_path(card, int8)
    return path if cache_valid(path, card) else None
