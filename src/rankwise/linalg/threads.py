"""Run many small LAPACK problems on all cores without oversubscription."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def single_threaded_torch() -> Iterator[int]:
    """Set torch's intra-op threads to 1; yields the previous count (restored on exit)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield previous
    finally:
        torch.set_num_threads(previous)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools_after_fork() -> None:
    """A forked child inherits the pools but not their threads (nor a lock another thread held)."""
    global _pools_lock
    _pools_lock = threading.Lock()
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's long-lived pool of ``workers`` threads.

    Kept between calls because workers hold per-thread state that is costly to rebuild: the
    randomized SVD's scratch buffers (`linalg.svd._scratch`) and the worker's malloc heap, whose
    fresh pages fault on first use. A new pool per call faulted 10-45k extra pages per SmolLM2 PiSSA
    init at 2 threads; a kept pool comes down to the ~6k a serial run has. Idle workers cost nothing
    and exit with the interpreter.
    """
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rankwise")
        return pool


def parallel_map(fn: Callable[[T], R], items: Iterable[T], on_done: Callable[[], object] | None = None) -> list[R]:
    """``[fn(x) for x in items]`` with one single-threaded worker per core, results in input order.

    Multi-threaded eigh/SVD on matrices of a few hundred rows spends most of its time in thread
    synchronisation (measured here: 20-50x more CPU time for a 576x576 fp64 eigh with 2 threads
    when another process shares the cores). One matrix per thread, each single-threaded, keeps every
    core busy with useful work; torch releases the GIL inside its kernels. Results do not depend on
    scheduling, so the output is bitwise the same as a serial loop.
    """
    items = list(items)

    def pinned(x: T) -> R:
        # OpenMP thread counts are per OS thread: a fresh worker would otherwise use every core,
        # and MKL's dynamic threading would make results depend on the machine's load.
        torch.set_num_threads(1)
        return fn(x)

    with single_threaded_torch() as cores:
        if cores <= 1 or len(items) <= 1:
            out = []
            for x in items:
                out.append(pinned(x))
                if on_done:
                    on_done()
            return out
        futures = [_pool(cores).submit(pinned, x) for x in items]
        results = []
        try:
            for future in futures:
                results.append(future.result())
                if on_done:
                    on_done()
        except BaseException:
            # Nothing may keep running on the caller's data after we return: drop the queued items
            # and wait for the ones already running (also on Ctrl-C).
            for future in futures:
                future.cancel()
            wait(futures)
            raise
        return results
