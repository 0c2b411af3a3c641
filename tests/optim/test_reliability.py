"""Bad inputs give one clear line: ranks, non-2-D weights, NaN gradients, foreign states, unknown knobs."""

from __future__ import annotations

import warnings

import pytest
import torch

from rankwise.errors import RankwiseError
from rankwise.optim import (
    AdamWConfig,
    LowRankAdamW,
    LowRankAdamWConfig,
    build_optimizer,
    optimizer_config,
    optimizer_names,
)


def _param(*shape: int) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.randn(*shape, generator=torch.Generator().manual_seed(0)))


def test_a_rank_above_the_shorter_side_is_clamped_with_one_warning_per_shape() -> None:
    a, b, c = _param(4, 10), _param(4, 10), _param(6, 3)
    opt = LowRankAdamW([a, b, c], rank=5)
    for p in (a, b, c):
        p.grad = torch.ones_like(p)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
        opt.step()
    assert [str(w.message) for w in caught] == [
        "rank 5 exceeds the shorter side of a 4x10 weight; using rank 4 for it, which saves no optimizer memory there",
        "rank 5 exceeds the shorter side of a 6x3 weight; using rank 3 for it, which saves no optimizer memory there",
    ]
    assert opt.state[a]["exp_avg"].shape == (4, 10) and opt.state[c]["exp_avg"].shape == (3, 6)


def test_lowrank_true_on_a_non_2d_parameter_is_refused() -> None:
    with pytest.raises(RankwiseError, match=r"^param group 1 asks for lowrank=True but its parameter 1 has shape "
                       r"\(5,\); only 2-D weights can be projected: put it in a group without lowrank=True$"):
        LowRankAdamW([{"params": [_param(3, 3)]}, {"params": [_param(3, 3), _param(5)], "lowrank": True}])
    LowRankAdamW([_param(3, 3), _param(5)])  # auto: the 1-D one gets plain AdamW


def test_a_nan_gradient_raises_naming_the_step() -> None:
    w, b = _param(3, 4), _param(4)
    opt = LowRankAdamW([w, b], rank=2)
    w.grad, b.grad = torch.ones(3, 4), torch.ones(4)
    opt.step()
    b.grad = torch.tensor([1.0, float("nan"), 0.0, 0.0])
    with pytest.raises(RankwiseError, match=r"^non-finite gradient \(NaN or inf\) at step 2 in parameter 1 of shape "
                       r"\(4,\); lower the learning rate or check the loss, or pass nan_policy='skip'$"):
        opt.step()


def test_skip_policy_skips_the_whole_step_and_counts_it() -> None:
    w, b = _param(3, 4), _param(4)
    opt = LowRankAdamW([w, b], rank=2, nan_policy="skip")
    w.grad, b.grad = torch.ones(3, 4), torch.ones(4)
    opt.step()
    before = [w.detach().clone(), b.detach().clone(), opt.state[w]["exp_avg"].clone()]
    w.grad = torch.full((3, 4), float("inf"))  # only w's gradient is bad: b must not move either
    opt.step()
    assert opt.skipped_steps == 1 and opt.steps == 2
    assert torch.equal(w, before[0]) and torch.equal(b, before[1]) and torch.equal(opt.state[w]["exp_avg"], before[2])
    assert opt.state[w]["step"] == 1
    assert opt.state_dict()["counters"] == {"steps": 2, "skipped_steps": 1}


def test_loading_a_state_of_another_rank_or_projector_is_refused() -> None:
    w = _param(4, 6)
    saved = LowRankAdamW([w], rank=2, projector="svd")
    w.grad = torch.ones(4, 6)
    saved.step()
    state = saved.state_dict()
    with pytest.raises(RankwiseError, match=r"^optimizer state was saved with rank 2 and projector 'svd' \{\} in param "
                       r"group 0, but this optimizer has rank 3 and projector 'svd' \{\}; build it with the saved "
                       r"settings, or start without the saved state$"):
        LowRankAdamW([w], rank=3, projector="svd").load_state_dict(state)
    with pytest.raises(RankwiseError, match=r"^optimizer state was saved with rank 2 and projector 'svd' .* but this "
                       r"optimizer has rank 2 and projector 'dct'"):
        LowRankAdamW([w], rank=2, projector="dct").load_state_dict(state)
    adamw = torch.optim.AdamW([w])
    adamw.step()
    with pytest.raises(RankwiseError, match=r"^optimizer state was saved with rank None and projector None"):
        LowRankAdamW([w], rank=2).load_state_dict(adamw.state_dict())


def test_bad_group_settings_and_projector_names_are_one_line() -> None:
    with pytest.raises(RankwiseError, match=r"^param group 0: rank: Input should be greater than 0$"):
        LowRankAdamW([_param(3, 3)], rank=0)
    with pytest.raises(RankwiseError, match=r"^unknown projector 'sdv' \(did you mean 'svd'\?\); choose one of: "
                       r"dct, random, randomized, svd$"):
        LowRankAdamW([_param(3, 3)], projector="sdv")
    with pytest.raises(RankwiseError, match=r"^param group 1: nan_policy: Input should be 'raise' or 'skip'$"):
        LowRankAdamW([{"params": [_param(3, 3)]}, {"params": [_param(2, 2)], "nan_policy": "ignore"}])
    with pytest.raises(RankwiseError, match=r"^projector 'svd': zzz: Extra inputs are not permitted$"):
        LowRankAdamW([_param(3, 3)], projector_options={"zzz": 1})


def test_factory_builds_by_name_and_refuses_unknown_names_and_knobs() -> None:
    assert optimizer_names() == ["adamw", "lowrank_adamw"]
    config = optimizer_config("lowrank_adamw", rank=8, projector="dct", lr=3e-4)
    assert isinstance(config, LowRankAdamWConfig) and config.rank == 8
    opt = build_optimizer(config, [_param(4, 16)])
    assert isinstance(opt, LowRankAdamW)
    assert opt.param_groups[0]["rank"] == 8 and opt.param_groups[0]["projector"] == "dct"
    plain = build_optimizer(optimizer_config("adamw", weight_decay=0.1), [_param(3)])
    assert type(plain) is torch.optim.AdamW and plain.param_groups[0]["weight_decay"] == 0.1
    assert isinstance(optimizer_config("adamw"), AdamWConfig)
    with pytest.raises(RankwiseError, match=r"^unknown optimizer 'lowrank-adamw' \(did you mean 'lowrank_adamw'\?\); "
                       r"choose one of: adamw, lowrank_adamw$"):
        optimizer_config("lowrank-adamw")
    with pytest.raises(RankwiseError, match=r"^optimizer 'lowrank_adamw' has no option 'rnak' "
                       r"\(did you mean 'rank'\?\); its options are: lr, betas, eps, weight_decay, rank, "
                       r"update_gap, projector, projector_options, scale, reproject_state, seed, nan_policy$"):
        optimizer_config("lowrank_adamw", rnak=8)
    with pytest.raises(RankwiseError, match=r"^optimizer 'adamw' has no option 'rank'; its options are: lr, betas, "
                       r"eps, weight_decay$"):
        optimizer_config("adamw", rank=8)
    with pytest.raises(RankwiseError, match=r"^optimizer 'lowrank_adamw' option update_gap: Input should be greater "
                       r"than 0$"):
        optimizer_config("lowrank_adamw", update_gap=0)


def test_configs_round_trip_through_yaml() -> None:
    import yaml

    config = optimizer_config("lowrank_adamw", rank=16, projector="randomized", projector_options={"niter": 3})
    back = LowRankAdamWConfig(**yaml.safe_load(yaml.safe_dump(config.model_dump(mode="json"))))
    assert back == config
