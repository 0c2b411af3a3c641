"""One loop, several trainable sets: all weights, LISA's sampled blocks; checks before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rankwise as rw
from rankwise.adapters.finetune import FinetuneConfig, finetune
from rankwise.errors import RankwiseError
from rankwise.train import LisaConfig, LisaTrainable
from rankwise.train import loop as loop_module
from rankwise.train.lisa import block_parameters, sampled_blocks
from tests.conftest import tiny_llama
from tests.train.interrupt import ctrl_c_at_step


def _counting(n: int, seed: int) -> torch.Tensor:
    """Windows [n, 16] that count up from a random start by 1, 2 or 3 (mod 128): learnable in a few steps."""
    gen = torch.Generator().manual_seed(seed)
    start, stride = torch.randint(0, 128, (n, 1), generator=gen), torch.randint(1, 4, (n, 1), generator=gen)
    return (start + stride * torch.arange(16)) % 128


TRAIN, HELD = _counting(12, 0), _counting(4, 1)


def cfg(**kw: object) -> FinetuneConfig:
    base: dict[str, object] = {"full": True, "seq_len": 16, "batch_size": 2, "steps": 6, "lr": 3e-3,
                               "warmup_steps": 1, "checkpoint_every": 2, "checkpointing": "none"}
    base.update(kw)
    return FinetuneConfig.model_validate(base)


def run(config: FinetuneConfig, out: Path, model: torch.nn.Module | None = None, **kw: object) -> dict[str, object]:
    return finetune(config, out, model=model or tiny_llama(), train_windows=TRAIN, eval_windows=HELD,
                    progress=False, **kw)


@pytest.mark.parametrize("optimizer", ["adamw", "lowrank_adamw"])
def test_full_finetune_writes_a_model_folder_that_loads_back(optimizer: str, tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    options = {"rank": 4, "update_gap": 3} if optimizer == "lowrank_adamw" else {}
    report = run(cfg(optimizer=optimizer, optimizer_options=options), tmp_path / "run")
    folder = tmp_path / "run"
    assert {"config.json", "model.safetensors", "config.yaml", "report.json"} <= {p.name for p in folder.iterdir()}
    assert report["perplexity_after"] < report["perplexity_before"]  # type: ignore[operator]
    loaded = LlamaForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        ppl = rw.eval.perplexity(loaded, HELD, progress=False).perplexity
    assert ppl == pytest.approx(report["perplexity_after"], rel=1e-5)
    assert report["trainable"] == "full" and report["optimizer"] == optimizer


@pytest.mark.parametrize("optimizer", ["adamw", "lowrank_adamw"])
def test_full_finetune_resumes_to_the_same_bytes(optimizer: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"rank": 4, "update_gap": 3} if optimizer == "lowrank_adamw" else {}
    config = cfg(optimizer=optimizer, optimizer_options=options)
    run(config, tmp_path / "whole")
    with ctrl_c_at_step(monkeypatch, 5):
        run(config, tmp_path / "resumed")
    with pytest.raises(RankwiseError, match=r"changed config \(optimizer_options.rank 4 -> 2\)" if options else
                       r"changed config \(optimizer 'adamw' -> 'lowrank_adamw'\)"):
        other = {"rank": 2, "update_gap": 3} if options else {}
        run(cfg(optimizer="lowrank_adamw", optimizer_options=other), tmp_path / "resumed", resume=True)
    run(config, tmp_path / "resumed", resume=True)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [json.loads((tmp_path / r / "report.json").read_text())["losses"] for r in ("whole", "resumed")]
    assert losses[0] == losses[1]


def test_lisa_trains_only_the_sampled_blocks_and_keeps_no_state_for_the_others() -> None:
    model = tiny_llama(layers=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lisa = LisaTrainable(LisaConfig(layers=1, interval=100), seed=3)
    lisa.check(model)
    lisa.prepare(model, TRAIN, False)
    params = lisa.parameters(model)
    opt = torch.optim.AdamW(list(params.values()), lr=1e-2)
    for step in range(3):
        lisa.before_step(step, model, opt)
        opt.zero_grad(set_to_none=True)
        rw.train.causal_lm_loss(model, TRAIN[:2])[0].backward()
        opt.step()
    (chosen,) = sampled_blocks(4, 1, seed=3, period=0)
    blocks, always = block_parameters(model)
    held = {id(p) for p in opt.state}
    assert held == {id(p) for p in [*always, *blocks[chosen]]}  # frozen blocks: no optimizer state
    after = model.state_dict()
    for name, value in after.items():
        moved = not torch.equal(value, before[name])
        in_block = f"layers.{chosen}." in name
        if ".layers." in name and "rotary" not in name:
            assert moved == in_block, name
    assert not torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])


def test_lisa_resamples_every_interval_and_drops_the_old_blocks_state() -> None:
    model = tiny_llama(layers=4)
    lisa = LisaTrainable(LisaConfig(layers=2, interval=2), seed=0)
    lisa.prepare(model, TRAIN, False)
    opt = torch.optim.AdamW(list(lisa.parameters(model).values()), lr=1e-3)
    blocks, always = block_parameters(model)
    for step in range(8):
        lisa.before_step(step, model, opt)
        opt.zero_grad(set_to_none=True)
        rw.train.causal_lm_loss(model, TRAIN[:2])[0].backward()
        opt.step()
        active = sampled_blocks(4, 2, 0, step // 2)
        assert {id(p) for p in opt.state} == {id(p) for p in always} | {id(p) for i in active for p in blocks[i]}
    assert len({tuple(s) for s in lisa.history}) > 1  # seeded, yet not the same blocks every period


def test_lisa_run_through_the_cli_config(tmp_path: Path) -> None:
    report = run(cfg(full=False, lisa={"layers": 1, "interval": 3}), tmp_path / "lisa")
    assert report["trainable"] == "lisa" and len(report["lisa_blocks_sampled"]) == 2  # type: ignore[arg-type]
    with pytest.raises(RankwiseError, match="--lisa-layers 3 is more than the model's 2 decoder blocks"):
        run(cfg(lisa={"layers": 3}), tmp_path / "too-many")
    assert not list(tmp_path.glob(".too-many*"))


def test_rank_too_large_names_the_smallest_matrix_and_leaves_nothing(tmp_path: Path) -> None:
    config = FinetuneConfig.model_validate({"adapter": {"method": "lora", "rank": 40}, "seq_len": 16, "steps": 1})
    with pytest.raises(RankwiseError, match=r"rank 40 is not below min\(m, n\) = 16 of the smallest target, "
                       r"model.layers.0.self_attn.k_proj \(16x32\)"):
        run(config, tmp_path / "out")
    bad_targets = FinetuneConfig.model_validate({"adapter": {"method": "lora"}, "targets": ["nothing"], "steps": 1})
    with pytest.raises(RankwiseError, match="match no linear layer"):
        run(bad_targets, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # no hidden .out.partial: the corrected command is not refused


def test_adapter_and_full_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="an adapter and full fine-tuning exclude each other"):
        FinetuneConfig.model_validate({"adapter": {"method": "lora"}, "full": True})
    with pytest.raises(ValueError, match="nothing to train"):
        FinetuneConfig.model_validate({})


def test_a_non_finite_step_is_skipped_and_counted_when_the_optimizer_says_skip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = loop_module._train_step

    def nan_at_step_3(model, config, train, step, *rest):  # type: ignore[no-untyped-def]
        loss, norm, tokens = real_step(model, config, train, step, *rest)
        return loss, (float("inf") if step == 2 else norm), tokens

    monkeypatch.setattr(loop_module, "_train_step", nan_at_step_3)
    options = {"rank": 4, "nan_policy": "skip"}
    report = run(cfg(optimizer="lowrank_adamw", optimizer_options=options), tmp_path / "skip")
    assert report["skipped_steps"] == 1 and report["steps"] == 6 and len(report["losses"]) == 5  # type: ignore[arg-type]
    with pytest.raises(RankwiseError, match="gradient norm became inf at step 3; training stopped"):
        run(cfg(optimizer="lowrank_adamw", optimizer_options={"rank": 4}), tmp_path / "raise")
