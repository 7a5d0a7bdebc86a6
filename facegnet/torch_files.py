"""Reading and writing ``.pt`` files: the one rule for every weights file and checkpoint facegnet opens or saves.

A ``.pt`` file is a pickle, and unpickling can run code, so every load is ``weights_only=True``: tensors, plain
Python data and, explicitly allowed, the numpy arrays and dtypes a trainer checkpoint holds (its RNG states).
A file holding anything else is refused in one line instead of being trusted. Every save goes through a temporary
file and a rename (:mod:`facegnet.atomic`), so a stop mid-write leaves the previous file whole.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facegnet.atomic import atomic_path
from facegnet.errors import WeightsError


def _numpy_globals() -> list[Any]:
    """The numpy callables and types ``np.random.get_state()`` pickles to (arrays, dtypes, their classes)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [_reconstruct, np.ndarray, np.dtype, *dtype_classes]


def load_pt(path: str | Path, what: str = "weights") -> Any:
    """The contents of a ``.pt`` file, on the CPU; :class:`WeightsError` naming the file when it is missing,
    unreadable or holds objects that are not data."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{what} not found", path) from None
    except IsADirectoryError:
        raise WeightsError(f"{what} expected, found a folder", path) from None
    except pickle.UnpicklingError:
        raise WeightsError(f"{what} hold objects other than tensors and plain data: refused (not loaded)",
                           path) from None
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise WeightsError(f"unreadable {what} ({exc.__class__.__name__})", path) from None


def save_pt(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically, world-readable (weights and checkpoints are meant to be shared, not biometric).

    Saved through a file object: given a path, torch names the archive's inner folder after the file, here a
    random temporary name, and the same weights would hash differently on every export.
    """
    with atomic_path(path, 0o644) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)
