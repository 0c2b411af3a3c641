"""Energy: every matrix keeps the same fraction of its (method-weighted) spectral energy."""

from __future__ import annotations

import torch

from rankwise.compress.allocators.base import MatrixSpectrum, bisect_threshold, register, round_rank


def _rank_for_fraction(s: MatrixSpectrum, fraction: float, multiple: int) -> int | None:
    curve = s.error_sq.double().cumsum(0)
    total = float(curve[-1])
    if total == 0.0:
        return round_rank(s, multiple, multiple)
    r = int(torch.searchsorted(curve, torch.tensor([fraction * total], dtype=torch.float64))[0]) + 1
    # Round up: the kept energy must reach the fraction.
    return round_rank(s, -(-r // multiple) * multiple, multiple)


@register("energy")
def allocate_energy(spectra: list[MatrixSpectrum], ratio: float, multiple: int) -> dict[str, int | None]:
    """The largest common energy fraction whose ranks fit the parameter budget (found by bisection)."""

    def ranks_at(drop: float) -> dict[str, int | None]:
        return {s.name: _rank_for_fraction(s, 1.0 - drop, multiple) for s in spectra}

    return bisect_threshold(spectra, ratio, ranks_at, 0.0, 1.0)
