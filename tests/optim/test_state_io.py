"""Optimizer checkpoints through safetensors + JSON: a save/load round trip continues bit-identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rankwise.errors import RankwiseError
from rankwise.optim import PROJECTORS, LowRankAdamW, load_optimizer_state, optimizer_state_to_tensors
from tests.conftest import tiny_llama


def _steps(model: torch.nn.Module, opt: torch.optim.Optimizer, start: int, stop: int) -> None:
    for i in range(start, stop):
        x = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        model(input_ids=x, labels=x).loss.backward()
        opt.step()


def _save(opt: torch.optim.Optimizer, folder: Path) -> None:
    tensors, meta = optimizer_state_to_tensors(opt)
    save_file(tensors, folder / "optimizer.safetensors")
    (folder / "optimizer.json").write_text(json.dumps(meta))


def _load(opt: torch.optim.Optimizer, folder: Path) -> None:
    meta = json.loads((folder / "optimizer.json").read_text())
    load_optimizer_state(opt, load_file(folder / "optimizer.safetensors"), meta)


def _adamw(params: object) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["adamw", *PROJECTORS.names()])
def test_save_load_then_the_same_steps_give_bit_identical_parameters(which: str, tmp_path: Path) -> None:
    def make(model: torch.nn.Module) -> torch.optim.Optimizer:
        if which == "adamw":
            return _adamw(model.parameters())
        # A schedule-set lr and a group override travel with the param groups.
        groups = [{"params": [p for p in model.parameters() if p.ndim == 2]},
                  {"params": [p for p in model.parameters() if p.ndim != 2], "lr": 3e-3}]
        return LowRankAdamW(groups, lr=1e-2, weight_decay=0.1, rank=4, update_gap=2, projector=which, seed=3)

    model = tiny_llama()
    opt = make(model)
    _steps(model, opt, 0, 3)
    _save(opt, tmp_path)
    saved_params = {k: v.clone() for k, v in model.state_dict().items()}
    _steps(model, opt, 3, 6)  # crosses the refresh at step 5

    resumed = tiny_llama()
    resumed.load_state_dict(saved_params)
    opt2 = make(resumed)
    _load(opt2, tmp_path)
    _steps(resumed, opt2, 3, 6)
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name
    if isinstance(opt2, LowRankAdamW):
        assert opt2.steps == 6
        first = opt2.state[next(iter(resumed.parameters()))]
        assert first["refreshes"] == 3 and isinstance(first["step"], int)


def test_bf16_weights_keep_fp32_moments_and_int_indices_through_a_load() -> None:
    w = torch.nn.Parameter(torch.randn(4, 8, dtype=torch.bfloat16))
    opt = LowRankAdamW([w], rank=2, projector="dct")
    w.grad = torch.randn(4, 8, dtype=torch.bfloat16)
    opt.step()
    tensors, meta = optimizer_state_to_tensors(opt)
    opt2 = LowRankAdamW([w], rank=2, projector="dct")
    load_optimizer_state(opt2, tensors, meta)
    assert opt2.state[w]["exp_avg"].dtype == torch.float32 and opt2.state[w]["proj_idx"].dtype == torch.int64
    assert torch.equal(opt2.state[w]["exp_avg"], opt.state[w]["exp_avg"])


def test_meta_is_plain_json_and_foreign_states_are_refused() -> None:
    w = torch.nn.Parameter(torch.randn(3, 5))
    opt = LowRankAdamW([w], rank=2)
    w.grad = torch.ones(3, 5)
    opt.step()
    tensors, meta = optimizer_state_to_tensors(opt)
    assert json.loads(json.dumps(meta)) == meta
    assert set(tensors) == {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.proj"}
    with pytest.raises(RankwiseError, match=r"^optimizer state was saved from LowRankAdamW but is loaded into AdamW; "
                       r"build the optimizer the saved run used$"):
        load_optimizer_state(_adamw([w]), tensors, meta)
    with pytest.raises(RankwiseError, match=r"^optimizer state names tensor 'state.0.proj' that the tensor file lacks"):
        load_optimizer_state(LowRankAdamW([w], rank=2), {k: v for k, v in tensors.items() if k != "state.0.proj"}, meta)
    opt.state[w]["thing"] = object()
    with pytest.raises(RankwiseError, match=r"^optimizer state holds a object at 'state.0.thing', which cannot be "
                       r"saved without pickle"):
        optimizer_state_to_tensors(opt)
