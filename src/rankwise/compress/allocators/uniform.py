"""Uniform: every matrix keeps the same fraction (1 − ratio) of its own parameters."""

from __future__ import annotations

from rankwise.compress.allocators.base import MatrixSpectrum, register, round_rank


@register("uniform")
def allocate_uniform(spectra: list[MatrixSpectrum], ratio: float, multiple: int) -> dict[str, int | None]:
    """r = (1 − ratio)·m·n/(m + n), rounded to the nearest multiple (never below one multiple).

    Rounding to the nearest keeps the achieved ratio closest to the requested one; it may land a
    fraction of a multiple above or below it.
    """
    ranks: dict[str, int | None] = {}
    for s in spectra:
        exact = (1.0 - ratio) * s.dense_params / (s.out_features + s.in_features)
        ranks[s.name] = round_rank(s, exact, multiple)
    return ranks
