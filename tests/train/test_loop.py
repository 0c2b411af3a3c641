"""The training loop on a tiny model with adapters: loss goes down, resume is exact, NaN and changed configs stop
cleanly."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml

import rankwise as rw
from rankwise.adapters.finetune import FinetuneConfig, finetune
from rankwise.errors import RankwiseError
from rankwise.train import learning_rate
from rankwise.train import loop as loop_module
from rankwise.train.loss import causal_lm_loss
from tests.conftest import tiny_llama
from tests.train.interrupt import ctrl_c_at_step

TRAIN = torch.randint(0, 128, (12, 16), generator=torch.Generator().manual_seed(0))
HELD = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(1))


def cfg(method: str = "pissa", **kw: object) -> FinetuneConfig:
    base: dict[str, object] = {"adapter": {"method": method, "rank": 4, "dropout": 0.1}, "seq_len": 16,
                               "batch_size": 2, "grad_accum": 2, "steps": 6, "lr": 1e-2, "warmup_steps": 2,
                               "checkpoint_every": 2, "loss_chunk": 7}
    base.update(kw)
    return FinetuneConfig.model_validate(base)


def run(config: FinetuneConfig, out: Path, **kw: object) -> dict[str, object]:
    return finetune(config, out, model=tiny_llama(), train_windows=TRAIN, eval_windows=HELD, progress=False, **kw)


def test_chunked_loss_matches_full_logits_loss_and_gradient() -> None:
    model = rw.adapt(tiny_llama(), rw.adapters.LoRA(rank=2))
    with torch.no_grad():
        for layer in rw.adapters.adapter_layers(model).values():
            layer.lora_B.normal_()
    batch = TRAIN[:3]
    ours, n = causal_lm_loss(model, batch, chunk=5)
    ours.backward()
    g_ours = {k: p.grad.clone() for k, p in rw.adapters.trainable_parameters(model).items()}
    model.zero_grad()
    logits = model(batch).logits[:, :-1].reshape(-1, 128)
    ref = torch.nn.functional.cross_entropy(logits, batch[:, 1:].reshape(-1), reduction="sum")
    ref.backward()
    assert n == 3 * 15
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    for k, p in rw.adapters.trainable_parameters(model).items():
        assert (g_ours[k] - p.grad).norm() <= 1e-4 * p.grad.norm(), k


def test_activation_checkpointing_changes_memory_not_the_gradients() -> None:
    from rankwise.train.memory import activation_checkpointing

    grads, norm_calls = [], []
    for mode in ("none", "selective", "full"):
        model = rw.adapt(tiny_llama(), rw.adapters.PiSSA(rank=2, dropout=0.1))
        model.train()
        calls: list[int] = []
        model.model.layers[0].input_layernorm.register_forward_hook(lambda *_, seen=calls: seen.append(1))
        torch.manual_seed(0)  # dropout draws; checkpointing replays them in the recomputation
        with activation_checkpointing(model, mode):  # type: ignore[arg-type]
            assert model.is_activation_checkpointing == (mode != "none")
            total, n = causal_lm_loss(model, TRAIN[:3], chunk=5)
            (total / n).backward()  # type: ignore[no-untyped-call]
        assert not model.is_activation_checkpointing  # switched off again on exit
        grads.append({k: p.grad for k, p in rw.adapters.trainable_parameters(model).items()})
        norm_calls.append(len(calls))
    assert norm_calls == [1, 2, 2]  # both checkpointing modes rerun the block's norm in the backward pass
    for other in grads[1:]:
        for name, grad in grads[0].items():
            torch.testing.assert_close(other[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_selective_checkpointing_keeps_full_rank_products_and_attention_only() -> None:
    from torch.utils.checkpoint import CheckpointPolicy

    from rankwise.train.memory import LOW_RANK_INNER_MAX, selective_policy

    aten = torch.ops.aten
    x, W, A = torch.zeros(8, 64), torch.zeros(64, 48), torch.zeros(64, 4)
    keep, redo = CheckpointPolicy.MUST_SAVE, CheckpointPolicy.PREFER_RECOMPUTE
    assert selective_policy(None, aten.mm.default, x, W) == keep  # a projection: 64 MACs per output
    assert selective_policy(None, aten.mm.default, x @ A, A.mT) == redo  # an adapter's rank-4 product
    assert selective_policy(None, aten.addmm.default, torch.zeros(48), x, W) == keep
    wide = torch.zeros(LOW_RANK_INNER_MAX + 1, 3)
    assert selective_policy(None, aten.bmm.default, torch.zeros(2, 5, wide.shape[0]), wide.expand(2, -1, -1)) == keep
    assert selective_policy(None, aten._scaled_dot_product_flash_attention_for_cpu.default, x, x, x) == keep
    for elementwise in (aten.mul.Tensor, aten.silu.default, aten.rsqrt.default, aten._to_copy.default):
        assert selective_policy(None, elementwise, x) == redo


def test_activation_checkpointing_needs_a_model_that_supports_it() -> None:
    from rankwise.train.memory import activation_checkpointing

    plain = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(RankwiseError, match="Sequential does not support activation checkpointing; train with "
                       "--checkpointing none"), activation_checkpointing(plain, "full"):
        pass
    with pytest.warns(UserWarning, match="training without it"), activation_checkpointing(plain, "selective"):
        pass  # the default mode degrades to keeping everything
    with pytest.raises(ValueError, match="unknown checkpointing mode 'some'"), \
            activation_checkpointing(plain, "some"):  # type: ignore[arg-type]
        pass


def test_configs_that_predate_the_checkpointing_modes_still_load() -> None:
    assert (cfg(checkpointing=True).checkpointing, cfg(checkpointing=False).checkpointing) == ("full", "none")
    assert cfg().checkpointing == "selective"


def test_bf16_mixed_precision_keeps_a_small_adapter_update() -> None:
    """Under autocast the adapter's sum with the base output is fp32: an update ~1e-4 of the output
    survives, where a bf16 sum (8 significant bits) gives back the base output itself."""
    from rankwise.adapters.layer import AdapterLinear
    from rankwise.train.memory import mixed_precision

    gen = torch.Generator().manual_seed(0)
    base = torch.nn.Linear(64, 32, bias=False)
    layer = AdapterLinear(base, torch.randn(4, 64, generator=gen), 1e-5 * torch.randn(32, 4, generator=gen), 1.0)
    x = torch.randn(8, 64, generator=gen)
    with mixed_precision(x.device, "bf16"):
        y = layer(x)
        y_base = base(x)
    assert y.dtype == torch.float32 and y_base.dtype == torch.bfloat16
    delta = x @ layer.lora_A.mT @ layer.lora_B.mT
    torch.testing.assert_close(y - y_base.float(), delta, rtol=1e-3, atol=2e-7)  # fp32 rounding of the sum
    rounded_away = (y_base + delta.to(torch.bfloat16)) == y_base
    assert float(rounded_away.float().mean()) > 0.9  # what a bf16 sum would have kept: nothing
    with torch.no_grad():  # outside autocast nothing changes: fp32 in, fp32 out, same formula
        torch.testing.assert_close(layer(x), base(x) + delta, rtol=1e-6, atol=1e-6)


def test_bf16_mixed_precision_gradients_match_fp32() -> None:
    from rankwise.train.memory import mixed_precision

    grads, losses = [], []
    for precision in ("fp32", "bf16"):
        model = rw.adapt(tiny_llama(), rw.adapters.PiSSA(rank=2))
        with mixed_precision(TRAIN.device, precision):
            total, n = causal_lm_loss(model, TRAIN[:4], chunk=5)
        (total / n).backward()  # type: ignore[no-untyped-call]
        losses.append(float(total / n))
        grads.append({k: p.grad for k, p in rw.adapters.trainable_parameters(model).items()})
        assert all(p.dtype == torch.float32 for p in rw.adapters.trainable_parameters(model).values())
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)
    for name, grad in grads[0].items():
        bf16 = grads[1][name]
        assert bf16.dtype == torch.float32
        cosine = float(torch.nn.functional.cosine_similarity(bf16.flatten(), grad.flatten(), dim=0))
        assert cosine > 0.99, name


def test_bf16_run_trains_like_fp32_and_records_its_precision(tmp_path: Path) -> None:
    reports = [run(cfg("lora", precision=p, steps=4), tmp_path / p) for p in ("fp32", "bf16")]
    for a, b in zip(reports[0]["losses"], reports[1]["losses"], strict=True):  # type: ignore[call-overload]
        assert b == pytest.approx(a, rel=2e-2)
    assert yaml.safe_load((tmp_path / "bf16" / "config.yaml").read_text())["precision"] == "bf16"


def test_schedule_warms_up_then_decays() -> None:
    lrs = [learning_rate(s, 10, 1.0, warmup=2, min_ratio=0.1) for s in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_run_folder_and_loss_goes_down(tmp_path: Path) -> None:
    report = run(cfg(steps=10), tmp_path / "run")
    folder = tmp_path / "run"
    assert {p.name for p in folder.iterdir()} == {"adapter.safetensors", "adapter.yaml", "config.yaml",
                                                   "report.json"}
    assert not (tmp_path / ".run.partial").exists()
    saved = json.loads((folder / "report.json").read_text())
    assert saved["steps"] == 10 and saved["losses"][-1] < saved["losses"][0]
    assert report["perplexity_after"] < report["perplexity_before"]
    assert FinetuneConfig.model_validate(yaml.safe_load((folder / "config.yaml").read_text())) == cfg(steps=10)
    model = rw.adapters.load_adapter(tiny_llama(), folder)
    with torch.no_grad():
        ppl = rw.eval.perplexity(model, HELD, progress=False).perplexity
    assert ppl == pytest.approx(report["perplexity_after"], rel=1e-5)


@pytest.mark.parametrize("method", ["pissa", "lora"])
def test_resume_reaches_the_same_weights(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(cfg(method), tmp_path / "full")
    with ctrl_c_at_step(monkeypatch, 5):
        run(cfg(method), tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists() and (tmp_path / ".resumed.partial" / "checkpoint").is_dir()
    with pytest.raises(RankwiseError, match="interrupted run"):
        run(cfg(method), tmp_path / "resumed")
    with pytest.raises(RankwiseError, match=r"changed config \(lr 0.01 -> 0.02\)"):
        run(cfg(method, lr=2e-2), tmp_path / "resumed", resume=True)
    # Checkpointing may change on resume: it trades memory for time and leaves every bit the same.
    run(cfg(method, checkpointing="none"), tmp_path / "resumed", resume=True)
    full = (tmp_path / "full" / "adapter.safetensors").read_bytes()
    assert (tmp_path / "resumed" / "adapter.safetensors").read_bytes() == full
    a = json.loads((tmp_path / "full" / "report.json").read_text())
    b = json.loads((tmp_path / "resumed" / "report.json").read_text())
    assert a["losses"] == b["losses"]


def test_nan_loss_stops_and_keeps_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = loop_module._train_step

    def nan_at_step_4(model, config, train, step, *rest):  # type: ignore[no-untyped-def]
        loss, norm, tokens = real_step(model, config, train, step, *rest)
        return (float("nan") if step == 3 else loss), norm, tokens

    monkeypatch.setattr(loop_module, "_train_step", nan_at_step_4)
    with pytest.raises(RankwiseError, match=r"loss became nan at step 4.*checkpoint \(step 2\)"):
        run(cfg(), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert (tmp_path / ".run.partial" / "checkpoint" / "adapter.safetensors").is_file()


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    with pytest.raises(RankwiseError, match="already exists"):
        run(cfg(), tmp_path / "run")
    assert (tmp_path / "run" / "keep.txt").read_text() == "x"
    with pytest.raises(RankwiseError, match="nothing to resume"):
        run(cfg(), tmp_path / "other", resume=True)


def test_chunked_loss_gives_a_trainable_head_and_tied_embedding_their_gradients() -> None:
    """Full fine-tuning: the head trains (and, tied, is the embedding); its gradient comes from the chunks."""
    for tied in (False, True):
        model = tiny_llama()
        if tied:
            model.lm_head.weight = model.model.embed_tokens.weight
        batch = TRAIN[:3]
        ours, _ = causal_lm_loss(model, batch, chunk=7)
        ours.backward()
        g_ours = {k: p.grad.clone() for k, p in model.named_parameters()}
        model.zero_grad()
        logits = model(batch).logits[:, :-1].reshape(-1, 128)
        ref = torch.nn.functional.cross_entropy(logits, batch[:, 1:].reshape(-1), reduction="sum")
        ref.backward()
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
        for k, p in model.named_parameters():
            assert (g_ours[k] - p.grad).norm() <= 1e-4 * p.grad.norm(), (tied, k)
