"""Global: all ranks chosen together to minimise the summed estimated error under the parameter budget."""

from __future__ import annotations

import heapq

from rankwise.compress.allocators.base import MatrixSpectrum, budget, register


def _tail(prefix: list[float], total: float, rank: int) -> float:
    return total - prefix[rank]


def greedy_allocation(spectra: list[MatrixSpectrum], ratio: float, multiple: int,
                      normalize: bool) -> dict[str, int | None]:
    """Greedy by marginal error removed per parameter spent.

    Each matrix's error curve is its truncation tail Σ_{i>r} error_sq_i (for whitened methods the
    absolute output error on the calibration data), divided by the matrix's total when
    ``normalize`` (relative errors). Every matrix starts at one ``multiple``; increments of
    one multiple, and the final step to dense (zero error), are taken best-ratio first while the
    budget allows. Tails are convex in r, so greedy increments are optimal up to rounding.
    """
    limit = budget(spectra, ratio)
    prefix: dict[str, list[float]] = {}
    total: dict[str, float] = {}
    ranks: dict[str, int | None] = {}
    spent = 0
    heap: list[tuple[float, int, str]] = []
    by_name = {s.name: s for s in spectra}
    for s in spectra:
        sq = s.error_sq.double()
        norm = (float(sq.sum()) or 1.0) if normalize else 1.0
        cums = [0.0, *(sq / norm).cumsum(0).tolist()]
        prefix[s.name], total[s.name] = cums, cums[-1]
        ranks[s.name] = multiple
        spent += s.lowrank_params(multiple)
    order = {s.name: i for i, s in enumerate(spectra)}

    def push(name: str) -> None:
        s, r = by_name[name], ranks[name]
        if r is None:
            return
        cap = s.max_lowrank(multiple)
        if r < cap:
            nxt = min(r + multiple, cap)
            gain = _tail(prefix[name], total[name], r) - _tail(prefix[name], total[name], nxt)
            cost = s.lowrank_params(nxt) - s.lowrank_params(r)
        else:  # next step: dense, removing the whole remaining tail
            gain = _tail(prefix[name], total[name], r)
            cost = s.dense_params - s.lowrank_params(r)
        heapq.heappush(heap, (-gain / max(cost, 1), order[name], name))

    for s in spectra:
        if spent > limit:
            break
        push(s.name)
    while heap:
        _, _, name = heapq.heappop(heap)
        s, r = by_name[name], ranks[name]
        assert r is not None
        cap = s.max_lowrank(multiple)
        new: int | None = min(r + multiple, cap) if r < cap else None
        new_params = s.dense_params if new is None else s.lowrank_params(new)
        extra = new_params - s.lowrank_params(r)
        if spent + extra > limit:
            continue  # does not fit; cheaper steps of other matrices may still fit
        spent += extra
        ranks[name] = new
        push(name)
    return ranks



@register("global")
def allocate_global(spectra: list[MatrixSpectrum], ratio: float, multiple: int) -> dict[str, int | None]:
    """Minimise the summed estimated loss increase under the budget.

    With output sensitivities (measured from LM-loss gradients), each tail becomes
    sensitivity × ‖δY‖², an estimate of the loss increase in one unit for all layers. Without them,
    tails are relative errors (each over its matrix's total), the best data-free normalisation.
    """
    if all(s.sensitivity is not None for s in spectra):
        weighted = [MatrixSpectrum(s.name, s.out_features, s.in_features, s.error_sq * float(s.sensitivity or 0.0),
                                   s.weight_sv, s.sensitivity) for s in spectra]
        return greedy_allocation(weighted, ratio, multiple, normalize=False)
    return greedy_allocation(spectra, ratio, multiple, normalize=True)


@register("global_relative")
def allocate_global_relative(spectra: list[MatrixSpectrum], ratio: float, multiple: int) -> dict[str, int | None]:
    """Minimise the summed relative error (each tail over its matrix's total energy) under the budget."""
    return greedy_allocation(spectra, ratio, multiple, normalize=True)
