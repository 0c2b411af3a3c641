import math

import pytest
import torch

from rankwise.linalg import (
    effective_rank,
    energy_curve,
    frobenius_norm,
    nuclear_norm,
    rank_for_energy,
    singular_values,
    spectral_norm,
    stable_rank,
)


def test_metrics_of_a_known_spectrum() -> None:
    W = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.0]))
    s = singular_values(W)
    assert frobenius_norm(s) == pytest.approx(math.sqrt(14), rel=1e-6)
    assert spectral_norm(s) == pytest.approx(3.0)
    assert nuclear_norm(s) == pytest.approx(6.0)
    assert stable_rank(s) == pytest.approx(14 / 9, rel=1e-6)
    p = torch.tensor([0.5, 1 / 3, 1 / 6])
    assert effective_rank(s) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-6)
    torch.testing.assert_close(energy_curve(s), torch.tensor([9 / 14, 13 / 14, 1.0, 1.0], dtype=torch.float64))
    assert rank_for_energy(s, 0.9) == 2
    assert rank_for_energy(s, 1.0) == 3


def test_effective_rank_of_identity_is_its_size() -> None:
    assert effective_rank(singular_values(torch.eye(7))) == pytest.approx(7.0, rel=1e-6)
