"""facegnet.prefetch.read_ahead: order kept, the next chunk read on threads, at most two chunks in flight."""
from __future__ import annotations

import threading
import time

import pytest

from facegnet.prefetch import read_ahead


def test_chunks_come_in_order_with_their_results() -> None:
    items = list(range(23))
    got = list(read_ahead(items, lambda x: x * x, chunk=5, threads=3))
    assert [list(c) for c, _ in got] == [items[i:i + 5] for i in range(0, 23, 5)]
    assert [r for _, results in got for r in results] == [x * x for x in items]
    assert list(read_ahead([], lambda x: x, chunk=4)) == []


def test_the_next_chunk_is_read_while_the_caller_works_and_no_further() -> None:
    started: list[int] = []
    lock = threading.Lock()
    names: set[str] = set()

    def read(x: int) -> int:
        with lock:
            started.append(x)
            names.add(threading.current_thread().name)
        return x

    seen_ahead = []
    for chunk, _ in read_ahead(list(range(12)), read, chunk=4, threads=2, name="test-read"):
        time.sleep(0.05)  # the caller's work: the next chunk is read meanwhile
        with lock:
            seen_ahead.append(max(started))
    assert seen_ahead == [7, 11, 11]  # one chunk ahead, never two
    assert all(n.startswith("test-read") for n in names)


def test_an_exception_of_read_is_raised_in_order() -> None:
    def read(x: int) -> int:
        if x == 6:
            raise ValueError("bad item 6")
        return x

    got = []
    with pytest.raises(ValueError, match="bad item 6"):
        for chunk, results in read_ahead(list(range(10)), read, chunk=4):
            got.extend(results)
    assert got == [0, 1, 2, 3]
