"""Reading ahead: decode the next chunk of photos on threads while the networks work on this one.

Decoding (and hashing) releases the GIL, so on a CPU with a core to spare it costs no wall time when the
networks are the slower stage; at most two chunks are held in memory, whatever the folder's size.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["read_ahead"]


def read_ahead(items: Sequence[T], read: Callable[[T], R], chunk: int, threads: int = 2,
               name: str = "facegnet-read") -> Iterator[tuple[Sequence[T], list[R]]]:
    """Yield ``(chunk of items, their read results)`` in order, reading the next chunk on ``threads`` threads
    (named ``name``) while the caller works on the current one. An exception ``read`` raises is re-raised here,
    in order; return errors instead to keep going past a bad item."""
    chunk = max(1, int(chunk))
    with ThreadPoolExecutor(max(1, int(threads)), thread_name_prefix=name) as pool:
        ahead = [pool.submit(read, item) for item in items[:chunk]]
        for start in range(0, len(items), chunk):
            results = [future.result() for future in ahead]
            ahead = [pool.submit(read, item) for item in items[start + chunk : start + 2 * chunk]]
            yield items[start : start + chunk], results
