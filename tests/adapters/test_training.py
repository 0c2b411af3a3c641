"""Every adapter method trains under Hugging Face's Trainer (with rankwise's callback) and resumes a rankwise
run byte for byte, rank schedules and regularisers included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import rankwise as rw
from rankwise.adapters import adapter_layers, method_names
from rankwise.adapters.finetune import FinetuneConfig, finetune
from rankwise.adapters.hooks import regulariser
from tests.conftest import tiny_llama
from tests.train.interrupt import ctrl_c_at_step

TRAIN = torch.randint(0, 128, (12, 16), generator=torch.Generator().manual_seed(0))
HELD = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(1))
NEW = ["svfit", "sorsa", "salt", "kasa", "nola", "lift", "adalora", "increlora"]
#: Schedules that act within a handful of steps.
KNOBS: dict[str, dict[str, Any]] = {
    "adalora": {"target_rank": 2, "interval": 1},
    "increlora": {"rank": 2, "target_rank": 4, "interval": 1, "grow_layers": 3},
    "nola": {"k": 16},
}


def adapter(method: str) -> dict[str, Any]:
    return {"method": method, "rank": 4, **KNOBS.get(method, {})}


def test_every_method_trains_under_the_hf_trainer(tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    from rankwise.adapters.callback import AdapterCallback

    data = [{"input_ids": row, "labels": row} for row in TRAIN]  # any map-style dataset of dicts
    for method in method_names():
        model = rw.adapt(tiny_llama(), rw.adapters.make_config(**adapter(method)),
                         calibration=TRAIN[:4])
        before = {n: p.detach().clone() for n, p in rw.adapters.trainable_parameters(model).items()}
        ranks = sum(layer.rank for layer in adapter_layers(model).values())
        args = TrainingArguments(output_dir=str(tmp_path / method), max_steps=6, per_device_train_batch_size=2,
                                 learning_rate=1e-2, lr_scheduler_type="constant", report_to=[], save_strategy="no",
                                 logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
        Trainer(model=model, args=args, train_dataset=data, callbacks=[AdapterCallback()]).train()
        after = rw.adapters.trainable_parameters(model)
        final = sum(layer.rank for layer in adapter_layers(model).values())
        if method == "adalora":
            assert final == 2 * len(adapter_layers(model)) < ranks, method  # pruned to the budget
        elif method == "increlora":
            assert final > ranks, method  # grown
        else:
            assert final == ranks and all(not torch.equal(before[n], p) for n, p in after.items()), method
        assert torch.isfinite(model(TRAIN[:2]).logits).all(), method


def test_the_callback_adds_the_regulariser_to_the_trainer_loss() -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from rankwise.adapters.callback import AdapterCallback

    model = rw.adapt(tiny_llama(), rw.adapters.AdaLoRA(rank=4, orth_weight=0.5))
    plain = model(input_ids=TRAIN[:2], labels=TRAIN[:2]).loss
    callback = AdapterCallback()
    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    callback.on_train_begin(args, TrainerState(), TrainerControl(), model=model)
    model.train()
    with_reg = model(input_ids=TRAIN[:2], labels=TRAIN[:2]).loss
    torch.testing.assert_close(with_reg, plain + regulariser(model))
    callback.on_train_end(args, TrainerState(), TrainerControl())
    torch.testing.assert_close(model(input_ids=TRAIN[:2], labels=TRAIN[:2]).loss, plain)


def cfg(method: str) -> FinetuneConfig:
    return FinetuneConfig.model_validate({
        "adapter": {**adapter(method), "dropout": 0.1}, "seq_len": 16, "batch_size": 2, "grad_accum": 2,
        "steps": 6, "lr": 1e-2, "warmup_steps": 2, "checkpoint_every": 2, "loss_chunk": 7})


def run(config: FinetuneConfig, out: Path, **kw: Any) -> dict[str, Any]:
    return finetune(config, out, model=tiny_llama(), train_windows=TRAIN, eval_windows=HELD, progress=False, **kw)


@pytest.mark.parametrize("method", NEW)
def test_resume_is_byte_identical(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(cfg(method), tmp_path / "full")
    with ctrl_c_at_step(monkeypatch, 5):
        run(cfg(method), tmp_path / "resumed")
    run(cfg(method), tmp_path / "resumed", resume=True)
    full = (tmp_path / "full" / "adapter.safetensors").read_bytes()
    assert (tmp_path / "resumed" / "adapter.safetensors").read_bytes() == full
    a = json.loads((tmp_path / "full" / "report.json").read_text())
    b = json.loads((tmp_path / "resumed" / "report.json").read_text())
    assert a["losses"] == b["losses"]
    if method in ("adalora", "increlora"):  # the schedule acted, and the resumed run restored its ranks
        fresh = rw.adapters.load_adapter(tiny_llama(), tmp_path / "resumed")
        ranks = sum(layer.rank for layer in adapter_layers(fresh).values())
        n = len(adapter_layers(fresh))
        assert ranks == 2 * n if method == "adalora" else ranks == 2 * n + 4 * 3  # 4 growths of 3 layers
