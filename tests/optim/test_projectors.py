"""Projector maths: each basis checked against a reference computed another way."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rankwise.errors import RankwiseError
from rankwise.optim import PROJECTORS, LowRankAdamW
from rankwise.optim.projectors.base import SharedBases, derive_seed
from rankwise.optim.projectors.dct import dct_basis
from rankwise.optim.projectors.gaussian import gaussian_projection
from rankwise.optim.projectors.randomized import RandomizedConfig
from rankwise.optim.reproject import change_of_basis, reproject_moments


def _projector(name: str, **options: object):  # type: ignore[no-untyped-def]
    cls = PROJECTORS.get(name)
    return cls(cls.config_class(**options), SharedBases())


def test_registry_holds_the_four_projectors() -> None:
    assert PROJECTORS.names() == ["dct", "random", "randomized", "svd"]


@pytest.mark.parametrize("d", [1, 7, 64, 192])
def test_dct_basis_is_orthonormal_and_matches_an_fft_dct(d: int) -> None:
    D = dct_basis(d).double()
    torch.testing.assert_close(D.mT @ D, torch.eye(d, dtype=torch.float64), atol=1e-6, rtol=0)
    # DCT-II of x by FFT of the even extension [x, reversed x] (orthonormal scaling): Dᵀ x.
    x = np.random.default_rng(d).standard_normal(d)
    spectrum = np.fft.fft(np.concatenate([x, x[::-1]]))[:d]
    k = np.arange(d)
    reference = np.real(spectrum * np.exp(-1j * np.pi * k / (2 * d))) / 2 * np.sqrt(2.0 / d)
    reference[0] /= math.sqrt(2.0)
    np.testing.assert_allclose((D.mT @ torch.from_numpy(x)).numpy(), reference, atol=1e-5)


def test_dct_picks_the_columns_the_gradient_lies_along_and_shares_one_basis() -> None:
    proj = _projector("dct")
    D = dct_basis(16)
    S = D[:, [3, 9, 12]] @ torch.diag(torch.tensor([5.0, 3.0, 1.0])) @ torch.randn(3, 40)
    state = proj.fit(S, 2, seed=0)
    assert state["proj_idx"].dtype == torch.int64
    assert state["proj_idx"].tolist() == [3, 9]
    proj.fit(torch.randn(16, 5), 4, seed=0)
    assert list(proj.shared.tensors) == [("dct", 16)]  # one basis per dimension, built once


def test_svd_projector_spans_the_top_left_singular_vectors() -> None:
    S = torch.randn(24, 60, generator=torch.Generator().manual_seed(0)) * torch.logspace(0, -3, 24)[:, None]
    P = _projector("svd").fit(S, 5, seed=0)["proj"]
    U = torch.linalg.svd(S.double(), full_matrices=False).U[:, :5]
    torch.testing.assert_close(P.double().mT @ P.double(), torch.eye(5, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(P.double() @ P.double().mT, U @ U.mT, atol=1e-4, rtol=0)  # same projector


def test_randomized_projector_finds_an_exactly_low_rank_subspace_reproducibly() -> None:
    gen = torch.Generator().manual_seed(1)
    S = torch.randn(30, 4, generator=gen) @ torch.randn(4, 80, generator=gen)
    proj = _projector("randomized", niter=2)
    P = proj.fit(S, 4, seed=7)["proj"]
    # Within the Krylov products' rounding (bf16 where the CPU has bf16 units) of the exact subspace.
    assert float((S - P @ (P.mT @ S)).norm() / S.norm()) < 2e-2
    assert torch.equal(P, proj.fit(S, 4, seed=7)["proj"])
    with pytest.raises(RankwiseError, match=r"^projector 'randomized': niter: Input should be greater than or "
                       r"equal to 0$"):
        LowRankAdamW([torch.zeros(3, 3, requires_grad=True)], projector="randomized", projector_options={"niter": -1})
    opt = LowRankAdamW([torch.zeros(3, 3, requires_grad=True)], projector=RandomizedConfig(niter=3))
    assert opt.param_groups[0]["projector"] == "randomized"
    assert opt.param_groups[0]["projector_options"] == {"niter": 3, "oversample": 0}


def test_random_projection_is_regenerated_bit_identically_from_its_seed() -> None:
    proj = _projector("random")
    state = proj.fit(torch.randn(20, 50), 6, seed=derive_seed(0, 3, 1))
    assert set(state) == {"proj_seed", "proj_rank"} and all(isinstance(v, int) for v in state.values())
    P = proj.basis(state, 20)
    assert torch.equal(P, proj.basis(dict(state), 20))
    assert torch.equal(P, gaussian_projection(20, 6, state["proj_seed"]))
    assert not torch.equal(P, proj.basis({**state, "proj_seed": derive_seed(0, 3, 2)}, 20))
    # derive_seed is a hash of its inputs, not of the process: the same on every rank and every run.
    assert derive_seed(0, 3, 1) == derive_seed(0, 3, 1) != derive_seed(0, 4, 1)


def test_random_projector_scales_each_channel_of_the_raw_gradient() -> None:
    proj = _projector("random")
    S = torch.randn(8, 5)
    state = proj.fit(S, 3, seed=1)
    R = proj.basis(state, 8).mT @ S
    N = torch.randn(3, 5)
    expected = torch.stack([S[:, j] * N[:, j].norm() / R[:, j].norm() for j in range(5)], dim=1)
    target = torch.zeros(8, 5)
    proj.apply_update(target, proj.basis(state, 8), N, S, R, alpha=1.0)
    torch.testing.assert_close(target, expected)


def test_reprojection_keeps_the_first_moment_exactly_when_the_new_subspace_contains_the_old() -> None:
    gen = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=torch.float64)).Q
    P_old = Q[:, :3]
    mix = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64)).Q
    P_new = Q[:, :5] @ mix  # a rotated basis of a larger subspace that contains span(P_old)
    M, V = torch.randn(3, 7, generator=gen, dtype=torch.float64), torch.rand(3, 7, generator=gen, dtype=torch.float64)
    C = change_of_basis(P_old, P_new)
    M_new, V_new = reproject_moments(M, V, C)
    torch.testing.assert_close(P_new @ M_new, P_old @ M)
    assert bool((V_new >= 0).all())
    # A re-selection of basis columns (what the DCT projector does) carries both moments exactly.
    E = torch.eye(12, dtype=torch.float64)
    perm = torch.tensor([2, 0, 1])
    M_p, V_p = reproject_moments(M, V, change_of_basis(E[:, [4, 6, 9]], E[:, [9, 4, 6]]))
    assert torch.equal(M_p, M[perm]) and torch.equal(V_p, V[perm])


def test_non_orthonormal_reprojection_recovers_the_vector_behind_the_coordinates() -> None:
    gen = torch.Generator().manual_seed(2)
    P_old = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    P_new = torch.cat([P_old, torch.randn(10, 2, generator=gen, dtype=torch.float64)], dim=1)
    g = P_old @ torch.randn(4, generator=gen, dtype=torch.float64)  # a vector inside span(P_old)
    C = change_of_basis(P_old, P_new, orthonormal=False)
    torch.testing.assert_close(C @ (P_old.mT @ g), P_new.mT @ g)
