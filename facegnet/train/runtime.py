"""Where and how a training run executes: the device, ``torchrun`` processes, the compiler ``--compile`` needs, and
the RNG states a checkpoint carries so that a resumed run continues exactly (the checkpoint file itself:
:func:`facegnet.torch_files.save_pt`).

Every collective here is a no-op for a single process, so the training loop calls them unconditionally.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import threading
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from facegnet.errors import DeviceError

__all__ = ["StopRequest", "any_rank", "barrier", "gather_rng", "pick_device", "rank_world",
           "require_compiler", "rng_state", "set_rng_state", "setup_distributed", "sync_buffers"]


def pick_device(kind: str) -> torch.device:
    """``auto`` (CUDA when present), ``cuda`` (this process's ``LOCAL_RANK``) or ``cpu``."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """Join ``torchrun``'s process group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on GPU); returns
    :func:`rank_world`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank_world()


def require_compiler() -> None:
    """Fail at once, in one line, where ``torch.compile`` would fail at the first step: Inductor builds its kernels
    with a C++ compiler (``$CXX``, else ``g++``; ``clang++`` on macOS)."""
    name = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    if shutil.which(name) is None:
        raise DeviceError(f"--compile needs a C++ compiler and {name!r} is not on PATH (Debian: apt-get install g++; "
                          "or set CXX); or train without --compile")


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every random state a step draws from: torch, NumPy, Python, the augmentation generator and CUDA's."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "augment": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    gen.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng(gen: torch.Generator, world: int) -> Any:
    """This process's :func:`rng_state`, or every process's (a list by rank) under ``torchrun``."""
    state = rng_state(gen)
    if world == 1:
        return state
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, state)
    return gathered


def sync_buffers(module: nn.Module, world: int) -> None:
    """Give every replica rank 0's BatchNorm statistics (DDP syncs them before each forward, not after the last)."""
    if world > 1:
        for buf in module.buffers():
            dist.broadcast(buf, 0)


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (so all stop, evaluate or checkpoint together)."""
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(world: int) -> None:
    """Wait for every process (nothing to wait for alone)."""
    if world > 1:
        dist.barrier()



class StopRequest:
    """Ctrl-C or SIGTERM asks a training run to stop at the next step boundary instead of dying mid-step.

    Used as a context manager around the loop: the first SIGINT/SIGTERM only sets :attr:`signum` (the loop checks
    it after each step, writes ``last.pt`` and returns, so ``--resume`` loses nothing); a second one restores the
    previous handlers and is re-delivered, so a stuck run still stops at once. Handlers can only be installed from
    the main thread; elsewhere (a run started from a worker thread) this does nothing and signals act as usual.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    @property
    def name(self) -> str:
        """The signal's name (``SIGTERM``), or ``""`` when none came."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self.signum is not None:  # the second signal: stop now, the way the process would have without us
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"facegnet train: {signal.Signals(signum).name}: stopping after this step with a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
