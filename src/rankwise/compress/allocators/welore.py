"""WeLore (Jaiswal et al. 2024): data-free ranks from the heavy tail of each weight's singular values."""

from __future__ import annotations

from rankwise.compress.allocators.base import MatrixSpectrum, bisect_threshold, register, round_rank


@register("welore")
def allocate_welore(spectra: list[MatrixSpectrum], ratio: float, multiple: int) -> dict[str, int | None]:
    """Keep the singular values above a global fraction t of each matrix's largest one.

    Matrices whose spectrum decays fast (a heavy tail of small σ) get low ranks; flat ones stay
    (near) dense. t is the smallest threshold meeting the parameter budget.
    """

    def ranks_at(t: float) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for s in spectra:
            sv = s.weight_sv.double()
            top = float(sv[0]) if sv.numel() else 0.0
            kept = int((sv > t * top).sum()) if top > 0 else 0
            out[s.name] = round_rank(s, -(-kept // multiple) * multiple, multiple)
        return out

    return bisect_threshold(spectra, ratio, ranks_at, 0.0, 1.0)
