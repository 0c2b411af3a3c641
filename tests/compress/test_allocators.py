import pytest
import torch

from rankwise.compress.allocators import ALLOCATORS, MatrixSpectrum
from rankwise.compress.allocators.base import budget, stored_params


def _spectra() -> list[MatrixSpectrum]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for i, (m, n) in enumerate([(64, 64), (128, 64), (64, 128), (32, 64), (64, 64)]):
        decay = 0.3 + 0.4 * i
        s = torch.arange(1, min(m, n) + 1, dtype=torch.float64) ** -decay * (1 + 0.01 * torch.rand(1, generator=gen))
        out.append(MatrixSpectrum(f"layer{i}", m, n, s.square() * (i + 1), s))
    return out


@pytest.mark.parametrize("name", sorted(ALLOCATORS))
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.7])
def test_allocators_respect_budget_multiple_and_dense_rule(name: str, ratio: float) -> None:
    spectra = _spectra()
    ranks = ALLOCATORS[name](spectra, ratio, 8)
    assert set(ranks) == {s.name for s in spectra}
    slack = sum(s.lowrank_params(8) for s in spectra) // 2 if name == "uniform" else 0  # uniform rounds to nearest
    assert stored_params(spectra, ranks) <= budget(spectra, ratio) + slack
    for s in spectra:
        r = ranks[s.name]
        if r is not None:
            assert r % 8 == 0 and r >= 8
            assert r * (s.out_features + s.in_features) < s.out_features * s.in_features


def test_unreachable_ratio_fails_clearly() -> None:
    from rankwise import RankwiseError
    from rankwise.compress.allocators.base import check_feasible

    with pytest.raises(RankwiseError, match=r"ratio 0\.95 cannot be reached with ranks that are multiples of 8"):
        check_feasible(_spectra(), 0.95, 8)


def test_uniform_ratio_is_per_matrix() -> None:
    spectra = _spectra()
    ranks = ALLOCATORS["uniform"](spectra, 0.5, 8)
    assert ranks["layer0"] == 16  # 0.5 * 64*64/128 = 16


def test_global_allocation_has_lower_total_relative_error_than_uniform() -> None:
    spectra = _spectra()

    def total_error(ranks: dict[str, int | None]) -> float:
        err = 0.0
        for s in spectra:
            r = ranks[s.name]
            if r is not None:
                err += float(s.error_sq[r:].sum() / s.error_sq.sum())
        return err

    uniform = ALLOCATORS["uniform"](spectra, 0.5, 8)
    best = ALLOCATORS["global"](spectra, 0.5, 8)
    assert stored_params(spectra, best) <= budget(spectra, 0.5)
    assert total_error(best) < total_error(uniform)


def test_global_keeps_a_flat_matrix_dense_when_others_are_cheap_to_cut() -> None:
    flat = MatrixSpectrum("flat", 64, 64, torch.ones(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64))
    steep = [MatrixSpectrum(f"s{i}", 64, 64, torch.arange(1, 65, dtype=torch.float64) ** -6.0,
                            torch.arange(1, 65, dtype=torch.float64) ** -3.0) for i in range(3)]
    ranks = ALLOCATORS["global"]([flat, *steep], 0.5, 8)
    assert ranks["flat"] is None
    assert all((ranks[f"s{i}"] or 64) <= 16 for i in range(3))
