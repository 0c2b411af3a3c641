"""Each merge method against a reference computed another way, on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

import rankwise as rw
from rankwise.errors import RankwiseError
from rankwise.merge.methods.base import METHODS


def _tensors(n: int = 3, shape: tuple[int, ...] = (6, 5), seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + 0.1 * torch.randn(shape, generator=g) for _ in range(n)]


def test_registry_holds_the_methods_and_suggests_close_names() -> None:
    assert {"linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties"} <= set(METHODS.names())
    with pytest.raises(RankwiseError, match=r"unknown merge method 'dare-ties' \(did you mean 'dare_ties'\?\)"):
        rw.merge.get("dare-ties")


def test_linear_is_the_weighted_average() -> None:
    _, xs = _tensors()
    w = [0.2, 0.5, 0.3]
    got = rw.merge.get("linear")(None, xs, weight=w)
    want = sum(wi * x.double() for wi, x in zip(w, xs, strict=True)) / sum(w)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)
    unnormalized = rw.merge.get("linear")(None, xs, weight=[1.0, 1.0, 1.0], normalize=False)
    torch.testing.assert_close(unnormalized, xs[0] + xs[1] + xs[2], rtol=0, atol=1e-6)


def test_task_arithmetic_adds_scaled_task_vectors() -> None:
    base, xs = _tensors()
    got = rw.merge.get("task_arithmetic")(base, xs, weight=[1.0, -0.5, 0.25], **{"lambda": 0.8})
    want = base + 0.8 * (1.0 * (xs[0] - base) - 0.5 * (xs[1] - base) + 0.25 * (xs[2] - base))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def _ties_by_loops(base: torch.Tensor, xs: list[torch.Tensor], w: list[float], density: float) -> torch.Tensor:
    """TIES written element by element: trim, elect, disjoint (weighted) mean."""
    flat_base = base.reshape(-1).tolist()
    trimmed = []
    for x in xs:
        delta = [a - b for a, b in zip(x.reshape(-1).tolist(), flat_base, strict=True)]
        k = max(1, int(density * len(delta)))
        order = sorted(range(len(delta)), key=lambda i: -abs(delta[i]))
        keep = set(order[:k])
        trimmed.append([d if i in keep else 0.0 for i, d in enumerate(delta)])
    out = []
    for i, b in enumerate(flat_base):
        weighted = [wi * t[i] for wi, t in zip(w, trimmed, strict=True)]
        sign = 1.0 if sum(weighted) >= 0 else -1.0
        agree = [j for j, v in enumerate(weighted) if v != 0 and math.copysign(1.0, v) == sign]
        total = sum(weighted[j] for j in agree)
        divisor = sum(w[j] for j in agree) or 1.0
        out.append(b + total / divisor)
    return torch.tensor(out, dtype=torch.float64).reshape(base.shape)


@pytest.mark.parametrize("density", [0.3, 0.5, 1.0])
def test_ties_matches_a_plain_loop(density: float) -> None:
    base, xs = _tensors(shape=(7, 9))
    w = [0.5, 0.3, 0.9]
    got = rw.merge.get("ties")(base.clone(), xs, weight=w, density=density)
    torch.testing.assert_close(got.double(), _ties_by_loops(base, xs, w, density), rtol=0, atol=1e-6)


def test_slerp_follows_the_great_circle() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(40, generator=g), torch.randn(40, generator=g)
    f = rw.merge.get("slerp")
    torch.testing.assert_close(f(a, [b], t=0.0), a, rtol=0, atol=1e-6)
    torch.testing.assert_close(f(a, [b], t=1.0), b, rtol=0, atol=1e-6)
    # Reference: rotate within the plane of a and b (Gram-Schmidt), then scale the norms linearly in angle.
    ad, bd = a.double(), b.double()
    theta = math.acos(float(ad @ bd) / float(ad.norm() * bd.norm()))
    t = 0.3
    want = (math.sin((1 - t) * theta) * ad + math.sin(t * theta) * bd) / math.sin(theta)
    torch.testing.assert_close(f(a, [b], t=t).double(), want, rtol=0, atol=1e-5)
    # Collinear inputs interpolate linearly.
    torch.testing.assert_close(f(a, [2 * a], t=0.25), 1.25 * a, rtol=0, atol=1e-6)


def test_dare_drops_and_rescales_with_a_seed() -> None:
    base = torch.zeros(200, 100)
    x = torch.ones(200, 100)
    f = rw.merge.get("dare_linear")
    out = f(base, [x], weight=[1.0], density=0.25, seed=7)
    kept = out != 0
    assert abs(float(kept.float().mean()) - 0.25) < 0.02
    torch.testing.assert_close(out[kept], torch.full((int(kept.sum()),), 4.0))  # 1 / density
    assert torch.equal(out, f(base, [x], weight=[1.0], density=0.25, seed=7))
    assert not torch.equal(out, f(base, [x], weight=[1.0], density=0.25, seed=8))
    same = f(base, [x.clone()], weight=[0.5], density=1.0)
    torch.testing.assert_close(same, rw.merge.get("task_arithmetic")(base, [x], weight=[0.5]))


def test_dare_ties_elects_signs() -> None:
    base = torch.zeros(4)
    xs = [torch.tensor([1.0, -1.0, 2.0, 0.0]), torch.tensor([3.0, 1.0, -1.0, 0.0])]
    out = rw.merge.get("dare_ties")(base, xs, weight=[1.0, 1.0], density=1.0, normalize=True)
    # signs: +, 0 → +, +, 0; agreeing entries averaged
    torch.testing.assert_close(out, torch.tensor([2.0, 1.0, 2.0, 0.0]))


def test_method_calls_leave_inputs_untouched_and_refuse_bad_parameters() -> None:
    base, xs = _tensors()
    copies = [x.clone() for x in xs]
    rw.merge.get("ties")(base, xs, weight=[1.0, 1.0, 1.0], density=0.5)
    assert all(torch.equal(a, b) for a, b in zip(xs, copies, strict=True))
    with pytest.raises(RankwiseError, match=r"parameter 'density' is 0.0; density must be in \(0, 1\]"):
        rw.merge.get("ties")(base, xs, weight=[1.0] * 3, density=0.0)
    with pytest.raises(RankwiseError, match=r"parameter 'weight' is -1.0, but this method needs weights >= 0"):
        rw.merge.get("ties")(base, xs, weight=[-1.0, 1.0, 1.0])
    with pytest.raises(RankwiseError, match=r"parameter 'weight' is nan; give a finite number"):
        rw.merge.get("linear")(None, xs, weight=[float("nan"), 1.0, 1.0])
    with pytest.raises(RankwiseError, match="linear: the weights sum to 0"):
        rw.merge.get("linear")(None, xs, weight=[0.0, 0.0, 0.0])
    with pytest.raises(RankwiseError, match="parameter 'weight' is required"):
        rw.merge.get("task_arithmetic")(base, xs)


def _low_rank(m: int, n: int, r: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(m, r, generator=g) @ torch.randn(r, n, generator=g)


def test_tsv_on_disjoint_tasks_is_task_arithmetic() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(8, 8, generator=g)
    d1, d2 = torch.zeros(8, 8), torch.zeros(8, 8)
    d1[:4, :4], d2[4:, 4:] = _low_rank(4, 4, 2, g), _low_rank(4, 4, 2, g)  # orthogonal row and column spaces
    got = rw.merge.get("tsv")(base, [base + d1, base + d2])
    torch.testing.assert_close(got, base + d1 + d2, rtol=0, atol=1e-5)


def test_tsv_keeps_each_tasks_top_singular_values_on_decorrelated_bases() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(12, 10, generator=g)
    deltas = [torch.randn(12, 10, generator=g) for _ in range(2)]
    got = rw.merge.get("tsv")(base, [base + d for d in deltas], weight=[1.0, 0.5])
    kept = torch.cat([torch.linalg.svdvals(d)[:5] for d in (deltas[0], 0.5 * deltas[1])])
    torch.testing.assert_close(torch.linalg.svdvals(got - base), kept.sort(descending=True).values, rtol=1e-4,
                               atol=1e-5)


def test_iso_c_flattens_the_spectrum_of_the_summed_task_matrix() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(9, 9, generator=g)
    deltas = [torch.randn(9, 9, generator=g) for _ in range(3)]
    total = sum(deltas, torch.zeros(9, 9)).double()
    got = rw.merge.get("iso_c")(base, [base + d for d in deltas], **{"lambda": 1.5})
    # Reference: the polar factor Δ (ΔᵀΔ)^(-1/2) by eigendecomposition, times the mean singular value.
    evals, evecs = torch.linalg.eigh(total.T @ total)
    polar = total @ (evecs * evals.rsqrt()) @ evecs.T
    sigma = float(evals.sqrt().mean())
    torch.testing.assert_close((got - base).double(), 1.5 * sigma * polar, rtol=0, atol=1e-4)
    vector = rw.merge.get("iso_c")(torch.zeros(4), [torch.ones(4), 3 * torch.ones(4)])
    torch.testing.assert_close(vector, 2 * torch.ones(4))  # non-matrices take the mean task vector


def test_iso_cts_is_isotropic_and_reduces_to_iso_c_without_task_subspaces() -> None:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(10, 16, generator=g)
    xs = [base + torch.randn(10, 16, generator=g) for _ in range(2)]
    cts = rw.merge.get("iso_cts")(base, xs, common_fraction=0.6)
    s = torch.linalg.svdvals(cts - base)
    torch.testing.assert_close(s, torch.full_like(s, float(s.mean())), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rw.merge.get("iso_cts")(base, xs, common_fraction=1.0),
                               rw.merge.get("iso_c")(base, xs), rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["iso_c", "iso_cts"])
def test_isotropic_merges_of_low_rank_task_vectors_flatten_only_their_real_directions(method: str) -> None:
    """Two rank-2 task vectors in a 40x64 matrix (as LoRA fine-tunes give): the merged update is isotropic
    on at most the sum's 4 directions and about as large as the sum, not shrunk by averaging 36 zeros
    into σ̄ and spread over directions of rounding noise. Iso-C's σ̄ is exactly the mean of the four."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(40, 64, generator=g)
    deltas = [torch.randn(40, 2, generator=g) @ torch.randn(2, 64, generator=g) for _ in range(2)]
    total = (deltas[0] + deltas[1]).double()
    got = rw.merge.get(method)(base, [base + d for d in deltas])
    s = torch.linalg.svdvals((got - base).double())
    kept = s[s > 1e-3 * s[0]]
    assert 3 <= kept.numel() <= 4 and float(s[4:].max()) < 1e-4 * float(s[0])
    torch.testing.assert_close(kept, torch.full_like(kept, float(kept.mean())), rtol=1e-4, atol=1e-5)
    if method == "iso_c":
        assert float(kept.mean()) == pytest.approx(float(torch.linalg.svdvals(total)[:4].mean()), rel=1e-4)
    assert 0.5 < float(s.norm() / total.norm()) < 1.5


def test_regmean_is_the_least_squares_merge_of_layer_outputs() -> None:
    g = torch.Generator().manual_seed(4)
    Xs = [torch.randn(50, 6, generator=g) * torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0]) for _ in range(2)]
    Ws = [torch.randn(4, 6, generator=g) for _ in range(2)]
    grams = [(X.T @ X).float() for X in Xs]
    got = rw.merge.get("regmean")(None, Ws, gram=grams, alpha=1.0)
    # Reference: one least-squares problem over both models' stacked inputs and outputs.
    X = torch.cat(Xs).double()
    Y = torch.cat([Xi.double() @ Wi.double().T for Xi, Wi in zip(Xs, Ws, strict=True)])
    want = torch.linalg.lstsq(X, Y).solution.T
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-4)
    # Without Grams (embeddings, norms): the weighted mean.
    torch.testing.assert_close(rw.merge.get("regmean")(None, Ws, weight=[1.0, 3.0]), (Ws[0] + 3 * Ws[1]) / 4)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_keeps_identical_models_and_is_deterministic(name: str) -> None:
    method = rw.merge.get(name)
    base, (x, y) = _tensors(n=2, shape=(6, 5), seed=9)
    params: dict[str, object] = {"t": 0.4} if name == "slerp" else {}
    if method.param("weight") is not None and method.param("weight").required:  # type: ignore[union-attr]
        params["weight"] = [0.6, 0.4] if method.inputs[1] != 1 else [1.0]
    inputs = [x, y] if method.inputs[1] != 1 else [x]
    b = None if method.base == "none" else base
    same = method(b, [base.clone() for _ in inputs], **params)
    torch.testing.assert_close(same, base, rtol=0, atol=1e-5)  # nothing to merge: the model itself
    one, two = method(b, inputs, seed=3, **params), method(b, inputs, seed=3, **params)
    assert torch.isfinite(one).all() and torch.equal(one, two) and one.shape == base.shape
