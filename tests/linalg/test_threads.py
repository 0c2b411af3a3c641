import threading
import time

import pytest
import torch

from rankwise.linalg.threads import parallel_map


@pytest.fixture
def two_threads() -> object:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_results_come_back_in_input_order_and_torch_threads_are_restored(two_threads: object) -> None:
    def slow_square(i: int) -> tuple[int, int]:
        time.sleep(0.001 * (i % 3))  # finish out of order
        return i * i, torch.get_num_threads()

    out = parallel_map(slow_square, range(30))
    assert [v for v, _ in out] == [i * i for i in range(30)]
    assert {threads for _, threads in out} == {1}  # workers run torch single-threaded
    assert torch.get_num_threads() == 2


def test_workers_are_kept_between_calls(two_threads: object) -> None:
    """Per-thread state (scratch buffers, malloc heaps) must survive from one call to the next."""

    def who(_: int) -> int:
        time.sleep(0.002)
        return threading.get_ident()

    first, second = set(parallel_map(who, range(8))), set(parallel_map(who, range(8)))
    assert threading.get_ident() not in first
    assert first == second


def test_a_forked_child_gets_a_pool_of_its_own(two_threads: object) -> None:
    """The child of a fork inherits the pool object but not its threads; it must not hang on it."""
    import multiprocessing

    parallel_map(lambda i: i, range(4))  # make sure the parent has a pool
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as child:
        assert child.apply_async(_square_all_in_parallel).get(timeout=60) == [i * i for i in range(6)]


def test_a_nested_call_runs_serially_in_its_worker(two_threads: object) -> None:
    out = parallel_map(lambda i: parallel_map(lambda j: i * 10 + j, range(3)), range(4))
    assert out == [[i * 10 + j for j in range(3)] for i in range(4)]


def test_an_error_cancels_queued_items_and_waits_for_running_ones(two_threads: object) -> None:
    started: list[int] = []
    finished: list[int] = []

    def fn(i: int) -> int:
        started.append(i)
        if i == 0:
            raise ValueError("bad item 0")
        time.sleep(0.01)
        finished.append(i)
        return i

    with pytest.raises(ValueError, match="bad item 0"):
        parallel_map(fn, range(200))
    settled = (list(started), list(finished))
    time.sleep(0.05)
    assert (started, finished) == settled  # nothing still runs after the call returned
    assert len(started) < 200  # the queue was dropped
    assert set(finished) == set(started) - {0}  # items already running were allowed to finish


def test_same_bits_as_a_serial_loop(two_threads: object) -> None:
    from rankwise.linalg import svd

    gen = torch.Generator().manual_seed(0)
    mats = [torch.randn(300, 200, generator=gen) for _ in range(6)]
    parallel = parallel_map(lambda W: svd(W, 8, "randomized", seed=1).S, mats)
    torch.set_num_threads(1)
    serial = [svd(W, 8, "randomized", seed=1).S for W in mats]
    assert all(torch.equal(a, b) for a, b in zip(parallel, serial, strict=True))


def _square_all_in_parallel() -> list[int]:
    torch.set_num_threads(2)
    return parallel_map(lambda i: i * i, range(6))
