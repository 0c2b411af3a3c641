"""`LowRankAdamW`: AdamW whose moments live in a low-rank projection of each 2-D gradient.

For a weight W [m, n] with gradient G, let S [d, k] be G's short-side view (S = G when m ≤ n, else
Gᵀ). A projector gives P [d, r]; Adam runs on R = Pᵀ S [r, k], so its two moments cost 2·r·k numbers
instead of 2·m·n, and the normalised update N [r, k] goes back as P N (or APOLLO's channel scaling),
times ``scale``. Every ``update_gap`` steps (and at a parameter's first step) P is refitted to the
current gradient, and with ``reproject_state`` the moments are carried into the new basis
(`rankwise.optim.reproject`); without it they are kept as they are, as GaLore does.

Parameters that are not 2-D, and every parameter of a group with ``lowrank=False``, get plain AdamW
(the same arithmetic as `torch.optim.AdamW` with ``foreach=False``). Weight decay is decoupled for all.

Rank larger than a matrix's shorter side: the rank is clamped to that side, with one warning per
shape (an error would make one rank unusable for a model whose k/v projections are narrower than its
other matrices). All random draws come from generators seeded by (seed, parameter index in the
groups, refresh count), never the global RNG: every DDP rank, whose gradients are all-reduced before
`step`, picks the same subspace, and a resumed run picks the one the uninterrupted run would have.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any

import torch
from pydantic import ValidationError

from rankwise.errors import RankwiseError
from rankwise.linalg.svd import all_finite
from rankwise.linalg.threads import parallel_map
from rankwise.optim.config import LowRankAdamWConfig, NanPolicy
from rankwise.optim.projectors import PROJECTORS
from rankwise.optim.projectors.base import Projector, ProjectorConfig, SharedBases, derive_seed
from rankwise.optim.reproject import change_of_basis, reproject_moments

#: Settings a saved state must share with the optimizer that loads it (its tensors' shapes follow them).
_STATE_SETTINGS = ("rank", "projector", "projector_options")


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "value"
    return f"{where}: {first['msg']}"


class LowRankAdamW(torch.optim.Optimizer):
    """Drop-in `torch.optim.Optimizer`; any argument may be overridden per param group, and a group
    with ``lowrank=False`` gets plain AdamW. ``projector`` is a registered name or a projector config
    instance; ``projector_options`` are the named projector's knobs."""

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 rank: int = 64, update_gap: int = 200, projector: str | ProjectorConfig = "svd",
                 scale: float = 0.25, reproject_state: bool = True, seed: int = 0, nan_policy: NanPolicy = "raise",
                 projector_options: dict[str, Any] | None = None) -> None:
        self.shared = SharedBases()
        self.steps = 0  # step() calls so far, skipped ones included
        self.skipped_steps = 0
        self._warned_shapes: set[tuple[int, int, int]] = set()
        self._projectors: dict[tuple[str, str], Projector] = {}
        name, options = _projector_spec(projector, projector_options)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "rank": rank,
                    "update_gap": update_gap, "projector": name, "projector_options": options, "scale": scale,
                    "reproject_state": reproject_state, "seed": seed, "nan_policy": nan_policy, "lowrank": None}
        super().__init__(params, defaults)

    # -- groups ------------------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = dict(param_group)
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        # Tied weights (one Parameter listed twice, e.g. embedding and LM head) are optimised once.
        group["params"] = list({id(p): p for p in params}.values())
        if "projector" in group:
            group["projector"], group["projector_options"] = _projector_spec(
                group["projector"], group.get("projector_options"))
        super().add_param_group(group)
        self._check_group(self.param_groups[-1], len(self.param_groups) - 1)

    def _check_group(self, group: dict[str, Any], gi: int) -> None:
        fields = {k: group[k] for k in LowRankAdamWConfig.model_fields}
        try:
            LowRankAdamWConfig(**fields)
        except ValidationError as e:
            raise RankwiseError(f"param group {gi}: {_one_line(e)}") from None
        self._projector(group)  # unknown projector names and knobs fail here, not at the first step
        lowrank = group["lowrank"]
        if lowrank not in (None, True, False):
            raise RankwiseError(f"param group {gi}: lowrank must be True, False or None (auto), got {lowrank!r}")
        for pi, p in enumerate(group["params"]):
            if lowrank is True and p.ndim != 2:
                raise RankwiseError(
                    f"param group {gi} asks for lowrank=True but its parameter {pi} has shape {tuple(p.shape)}; "
                    "only 2-D weights can be projected: put it in a group without lowrank=True")

    def _projector(self, group: dict[str, Any]) -> Projector:
        name, options = group["projector"], group["projector_options"]
        key = (name, repr(sorted(options.items())))
        if key not in self._projectors:
            cls = PROJECTORS.get(name)
            try:
                config = cls.config_class(**options)
            except ValidationError as e:
                raise RankwiseError(f"projector '{name}': {_one_line(e)}") from None
            self._projectors[key] = cls(config, self.shared)
        return self._projectors[key]

    def _indexed(self) -> Iterator[tuple[int, dict[str, Any], torch.Tensor]]:
        """(index in the groups, group, parameter) for every parameter, in the groups' order."""
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield index, group, p
                index += 1

    # -- step --------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._nonfinite_gradients():
            self.steps += 1
            self.skipped_steps += 1
            return loss
        self.steps += 1
        # Fit every projector due first, then update the parameters; both one parameter per core.
        live = [(index, group, p) for index, group, p in self._indexed() if p.grad is not None]
        for _, _, p in live:
            self.state[p]  # creates the entry here, not concurrently on the workers
        fitted = self._fit_projectors(live)
        parallel_map(lambda item: self._update(item[1], item[2], fitted.get(item[0])), live)
        return loss

    def _update(self, group: dict[str, Any], p: torch.Tensor, fitted: tuple[dict[str, Any], int] | None) -> None:
        """One parameter's step, on a single-threaded worker: a few hundred small element-wise kernels
        per step, each multi-threaded, would each wait at a thread barrier, which costs far more than
        the arithmetic when the cores are shared. Parameters are independent, so the result is the same
        bits whatever the scheduling."""
        with torch.no_grad():  # grad mode is per thread: the caller's no_grad does not reach a worker
            if fitted is not None:
                self._refresh(p, group, *fitted)
            if _lowrank(group, p):
                self._lowrank_step(p, group)
            else:
                self._adamw_step(p, group)

    def _nonfinite_gradients(self) -> bool:
        """True when the step must be skipped; raises for a NaN/inf gradient in a ``nan_policy="raise"`` group.

        Checked for every gradient before any parameter changes, so a skipped step changes nothing. Under
        DDP every rank sees the same all-reduced gradients, hence takes the same decision.
        """
        skip = False
        for index, group, p in self._indexed():
            if p.grad is not None and p.grad.is_sparse:
                raise RankwiseError("LowRankAdamW does not take sparse gradients; "
                                    "build the embedding with sparse=False")
            if p.grad is None or all_finite(p.grad):
                continue
            if group["nan_policy"] == "raise":
                raise RankwiseError(
                    f"non-finite gradient (NaN or inf) at step {self.steps + 1} in parameter {index} of shape "
                    f"{tuple(p.shape)}; lower the learning rate or check the loss, or pass nan_policy='skip'")
            skip = True
        return skip

    def _adamw_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """`torch.optim.AdamW`'s single-tensor arithmetic, operation for operation."""
        grad = p.grad
        assert grad is not None
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        lr, (beta1, beta2) = group["lr"], group["betas"]
        if group["weight_decay"] != 0:  # as torch skips it
            p.mul_(1 - lr * group["weight_decay"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** state["step"]
        bias_correction2 = 1 - beta2 ** state["step"]
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)

    def _rank(self, group: dict[str, Any], shape: tuple[int, int]) -> int:
        rank, short = int(group["rank"]), min(shape)
        if rank <= short:
            return rank
        if (rank, *shape) not in self._warned_shapes:
            self._warned_shapes.add((rank, *shape))
            warnings.warn(f"rank {rank} exceeds the shorter side of a {shape[0]}x{shape[1]} weight; using rank "
                          f"{short} for it, which saves no optimizer memory there", stacklevel=4)
        return short

    def _fit_projectors(self, live: list[tuple[int, dict[str, Any], torch.Tensor]]
                        ) -> dict[int, tuple[dict[str, Any], int]]:
        """(new projector state, rank) of the parameters due for a refresh (their first step, then every
        ``update_gap`` steps), by parameter index.

        All of a step's fits run together, one matrix per core on single-threaded workers: eigh and SVD
        of a few hundred rows spend most of their time synchronising threads when the cores are shared,
        and a fixed thread count keeps the result independent of the machine's load.
        """
        jobs = []
        for index, group, p in live:
            state = self.state[p]
            if not _lowrank(group, p) or (state and state["step"] % group["update_gap"] != 0):
                continue
            rank = self._rank(group, (p.shape[0], p.shape[1]))
            seed = derive_seed(group["seed"], index, state.get("refreshes", 0))
            jobs.append((index, self._projector(group), _short_side(p), rank, seed))
        fits = parallel_map(lambda job: job[1].fit(job[2], job[3], job[4]), jobs)
        return {job[0]: (fit, job[3]) for job, fit in zip(jobs, fits, strict=True)}

    def _refresh(self, p: torch.Tensor, group: dict[str, Any], new: dict[str, Any], rank: int) -> None:
        """Install a refitted projector; create the moments, or carry them into the new basis."""
        state = self.state[p]
        projector = self._projector(group)
        d, k = min(p.shape), max(p.shape)
        if "exp_avg" not in state:
            state.update(step=0, refreshes=0)
            state["exp_avg"] = torch.zeros(rank, k, dtype=torch.float32, device=p.device)
            state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])
        elif group["reproject_state"]:
            C = change_of_basis(projector.basis(state, d), projector.basis(new, d), projector.orthonormal)
            state["exp_avg"], state["exp_avg_sq"] = reproject_moments(state["exp_avg"], state["exp_avg_sq"], C)
        state.update(new)
        state["refreshes"] += 1

    def _lowrank_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        projector = self._projector(group)
        state = self.state[p]
        state["step"] += 1
        lr, (beta1, beta2) = group["lr"], group["betas"]
        S = _short_side(p)
        P = projector.basis(state, S.shape[0])
        R = P.mT @ S
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(R, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(R, R, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** state["step"]
        bias_correction2 = 1 - beta2 ** state["step"]
        N = exp_avg / (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(group["eps"])
        if group["weight_decay"] != 0:
            p.mul_(1 - lr * group["weight_decay"])
        target = p if p.shape[0] <= p.shape[1] else p.mT  # the parameter's short-side view, written in place
        projector.apply_update(target, P, N, S, R, -lr / bias_correction1 * group["scale"])

    # -- state -------------------------------------------------------------------------------------

    def extra_state_tensors(self) -> list[torch.Tensor]:
        """Tensors kept outside ``self.state``: the shared bases (recomputable, so never checkpointed)."""
        return list(self.shared.tensors.values())

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["counters"] = {"steps": self.steps, "skipped_steps": self.skipped_steps}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise RankwiseError(f"optimizer state has {len(saved_groups)} param groups but this optimizer has "
                                f"{len(self.param_groups)}; build it with the same groups as the saved run")
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if any(saved.get(key) != group[key] for key in _STATE_SETTINGS):
                raise RankwiseError(
                    f"optimizer state was saved with rank {saved.get('rank')} and projector {saved.get('projector')!r} "
                    f"{saved.get('projector_options', {})} in param group {gi}, but this optimizer has rank "
                    f"{group['rank']} and projector {group['projector']!r} {group['projector_options']}; build it "
                    "with the saved settings, or start without the saved state")
        try:
            super().load_state_dict({"state": state_dict["state"], "param_groups": saved_groups})
        except ValueError as e:
            raise RankwiseError(f"optimizer state does not fit this optimizer: {e}") from None
        # torch casts every floating state tensor to its parameter's dtype and device; the low-rank moments
        # and bases stay fp32 and the DCT indices int64 whatever the weights' dtype, so restore them as saved.
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        saved_ids = chain.from_iterable(g["params"] for g in saved_groups)
        by_id = dict(zip(saved_ids, params, strict=True))
        for pid, values in state_dict["state"].items():
            p = by_id[pid]
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    self.state[p][key] = value.to(device=p.device, copy=True)
        counters = state_dict.get("counters", {})
        self.steps = int(counters.get("steps", 0))
        self.skipped_steps = int(counters.get("skipped_steps", 0))


def _lowrank(group: dict[str, Any], p: torch.Tensor) -> bool:
    return group["lowrank"] is not False and p.ndim == 2


def _short_side(p: torch.Tensor) -> torch.Tensor:
    """The gradient's short-side view S [d, k] (d ≤ k) in fp32: G when m ≤ n, else Gᵀ (a view, no copy)."""
    assert p.grad is not None
    G = p.grad if p.grad.dtype == torch.float32 else p.grad.float()
    return G if G.shape[0] <= G.shape[1] else G.mT


def _projector_spec(projector: str | ProjectorConfig, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(registered name, knobs) from a name plus options, or from a projector config instance."""
    if isinstance(projector, ProjectorConfig):
        for name, cls in PROJECTORS.items():
            if type(projector) is cls.config_class and cls.config_class is not ProjectorConfig:
                return name, {**projector.model_dump(), **(options or {})}
        raise RankwiseError(f"{type(projector).__name__} is no projector's config; pass a projector name "
                            f"({', '.join(PROJECTORS.names())}) and projector_options instead")
    if not isinstance(projector, str):
        raise RankwiseError(f"projector must be a name ({', '.join(PROJECTORS.names())}), got {projector!r}")
    return projector, dict(options or {})
