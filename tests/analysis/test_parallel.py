"""The analysis worker pool: input order out, bounded memory, and no idle worker behind a slow item."""

import threading
from collections.abc import Iterator

import pytest

from rankwise.analysis.analyze import parallel_map


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_come_out_in_input_order_with_a_bounded_number_of_live_items(workers: int) -> None:
    lock = threading.Lock()
    live, peak = 0, 0

    def items() -> Iterator[int]:
        nonlocal live, peak
        for i in range(40):
            with lock:  # an item is live (its matrix in memory) from its read until fn is done with it
                live += 1
                peak = max(peak, live)
            yield i

    def fn(i: int) -> int:
        nonlocal live
        threading.Event().wait(0.001 * (i % 5))  # uneven work, so items finish out of order
        with lock:
            live -= 1
        return i * i

    assert list(parallel_map(fn, items(), workers)) == [i * i for i in range(40)]
    assert peak <= workers + 1


def test_a_slow_first_item_does_not_hold_back_the_others() -> None:
    # Item 0 can only finish once item 6 has run: an in-order window of a few items would never
    # start item 6 while item 0 is unfinished (and the wait would time out).
    released = threading.Event()

    def fn(i: int) -> bool:
        if i == 6:
            released.set()
        return released.wait(timeout=20) if i == 0 else True

    assert list(parallel_map(fn, range(10), workers=2)) == [True] * 10


def test_an_error_in_fn_reaches_the_caller() -> None:
    def fn(i: int) -> int:
        if i == 3:
            raise ValueError("bad matrix")
        return i

    with pytest.raises(ValueError, match="bad matrix"):
        list(parallel_map(fn, range(8), workers=2))
