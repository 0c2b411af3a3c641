"""`finetune`: train an adapter on token windows; checkpoints, resume, NaN stop, a run folder at the end."""

from __future__ import annotations

import math
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.adapters.apply import adapt, trainable_parameters
from rankwise.adapters.run_io import load_adapter
from rankwise.adapters.train.checkpoint import CHECKPOINT, read_state, restore_optimizer, save_checkpoint
from rankwise.adapters.train.config import FinetuneConfig
from rankwise.adapters.train.loss import causal_lm_loss
from rankwise.adapters.train.memory import activation_checkpointing, mixed_precision
from rankwise.adapters.train.run_folder import finish_run, prepare_work_folder
from rankwise.adapters.train.schedule import learning_rate
from rankwise.errors import RankwiseError


def batch_indices(step: int, micro: int, cfg: FinetuneConfig, n_windows: int) -> torch.Tensor:
    """Window indices of micro-batch ``micro`` of step ``step``: epochs of seeded permutations, so the
    data order is a pure function of (seed, step) and a resumed run sees the same batches."""
    first = (step * cfg.grad_accum + micro) * cfg.batch_size
    idx = []
    for pos in range(first, first + cfg.batch_size):
        epoch, offset = divmod(pos, n_windows)
        perm = torch.randperm(n_windows, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        idx.append(int(perm[offset]))
    return torch.tensor(idx)


def _train_step(model: nn.Module, cfg: FinetuneConfig, train: torch.Tensor, step: int,
                params: list[nn.Parameter]) -> tuple[float, float, int]:
    """One optimizer step's forward/backward over ``grad_accum`` micro-batches: (mean loss, grad norm, tokens)."""
    total, tokens = 0.0, 0
    n_pred = cfg.grad_accum * cfg.batch_size * (cfg.seq_len - 1)
    for micro in range(cfg.grad_accum):
        batch = train[batch_indices(step, micro, cfg, train.shape[0])]
        with mixed_precision(batch.device, cfg.precision):
            loss, _ = causal_lm_loss(model, batch, cfg.loss_chunk)
        (loss / n_pred).backward()  # type: ignore[no-untyped-call]
        total += float(loss.detach())
        tokens += batch.numel()
    norm = (float(nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)) if cfg.max_grad_norm
            else float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))))
    return total / n_pred, norm, tokens


def _windows(cfg: FinetuneConfig, tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    from rankwise.data import windows

    train = windows(cfg.data, "calib", cfg.seq_len, tokenizer=tokenizer)
    held = (windows(cfg.eval_data or cfg.data, "eval", cfg.seq_len, tokens=cfg.eval_tokens, tokenizer=tokenizer)
            if cfg.eval_tokens else None)
    return train, held


def _perplexity(model: nn.Module, held: torch.Tensor | None, cfg: FinetuneConfig, progress: bool,
                desc: str) -> float | None:
    from rankwise.eval.perplexity import perplexity

    return None if held is None else perplexity(model, held, cfg.eval_batch_size, progress, desc).perplexity


def finetune(
    config: FinetuneConfig,
    out: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    train_windows: torch.Tensor | None = None,
    eval_windows: torch.Tensor | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``config.adapter`` on ``config.model`` and write the run folder ``out``; returns the report.

    ``model``/``tokenizer``/``train_windows`` [N, T]/``eval_windows`` override loading from the config
    (tests use a tiny model). Progress lives in a hidden ``.<out>.partial`` folder until the run ends;
    ``resume=True`` continues from its last checkpoint and refuses a changed config.
    """
    out_path = Path(out)
    work = prepare_work_folder(out_path, config, resume, overwrite)
    if model is None:
        from rankwise.io.loading import load_model

        model, tokenizer = load_model(config.model)
    if train_windows is None:
        train_windows, eval_windows = _windows(config, tokenizer)
    assert train_windows is not None
    torch.manual_seed(config.seed)
    state = read_state(work) if resume else None
    started = time.perf_counter()
    if state is None:
        ppl_before = _perplexity(model, eval_windows, config, progress, "perplexity before")
        calib = train_windows[: getattr(getattr(config.adapter, "calibration", None), "windows", 0)] if \
            config.adapter.needs_calibration else None
        adapt(model, config.adapter, config.targets, calibration=calib, progress=progress)
        state = {"step": 0, "losses": [], "tokens": 0, "perplexity_before": ppl_before, "elapsed_s": 0.0,
                 "train_s": 0.0}
    else:
        load_adapter(model, work / CHECKPOINT)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(list(params.values()), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    if state["step"] > 0:
        restore_optimizer(work, optimizer, params)
    state = _loop(model, config, train_windows, optimizer, params, state, work, progress)
    state["elapsed_s"] += time.perf_counter() - started
    state["perplexity_after"] = _perplexity(model, eval_windows, config, progress, "perplexity after")
    report = _report(model, config, state)
    finish_run(out_path, work, model, config, report, overwrite)
    return report


def _loop(model: nn.Module, cfg: FinetuneConfig, train: torch.Tensor, optimizer: torch.optim.Optimizer,
          params: dict[str, nn.Parameter], state: dict[str, Any], work: Path, progress: bool) -> dict[str, Any]:
    model.train()
    plist = list(params.values())
    bar = tqdm(total=cfg.steps, initial=state["step"], desc="finetune", unit="step", disable=not progress)
    t0, tokens0, train_s0 = time.perf_counter(), state["tokens"], state.get("train_s", 0.0)
    try:
        with activation_checkpointing(model, cfg.checkpointing):
            for step in range(state["step"], cfg.steps):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
                optimizer.zero_grad(set_to_none=True)
                loss, norm, tokens = _train_step(model, cfg, train, step, plist)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    last = read_state(work)
                    kept = (f"the last good checkpoint (step {last['step']}) is kept in {work}" if last
                            else "no checkpoint had been written yet")
                    raise RankwiseError(f"loss became {loss} at step {step + 1}; training stopped and {kept}; "
                                        "lower --lr (and use --overwrite to start again)")
                optimizer.step()
                state["losses"].append(loss)
                state["tokens"] += tokens
                state["step"] = step + 1
                state["train_s"] = train_s0 + time.perf_counter() - t0
                rate = (state["tokens"] - tokens0) / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:.0f}")
                bar.update(1)
                if state["step"] % cfg.checkpoint_every == 0 and state["step"] < cfg.steps:
                    save_checkpoint(work, model, optimizer, params, state)
    finally:
        bar.close()
        model.eval()
    return state


def _report(model: nn.Module, cfg: FinetuneConfig, state: dict[str, Any]) -> dict[str, Any]:
    from rankwise.eval.params import parameter_count

    losses = state["losses"]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "method": cfg.adapter.method, "model": cfg.model, "steps": state["step"], "tokens_trained": state["tokens"],
        "trainable_parameters": sum(p.numel() for p in trainable_parameters(model).values()),
        "total_parameters": parameter_count(model), "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None, "losses": losses,
        "perplexity_before": state["perplexity_before"], "perplexity_after": state["perplexity_after"],
        "elapsed_s": state["elapsed_s"], "train_s": state.get("train_s", 0.0),
        "tokens_per_s": state["tokens"] / max(state.get("train_s", 0.0), 1e-9),
        "peak_rss_mb": peak_kb / 1024, "config": cfg.to_yaml_dict(),
    }

