"""`train`: the one training loop — any `Trainable`, any optimizer of `rankwise.optim`'s factory.

Checkpoints, bit-identical resume, NaN stop, activation checkpointing, bf16 mixed precision, the
learning-rate schedule, evaluation before/after and an atomically written run folder live here once;
capabilities plug in what trains (`Trainable`) and, where it is not next-token prediction, the loss.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.errors import RankwiseError
from rankwise.optim import build_optimizer, optimizer_config
from rankwise.train.checkpoint import CHECKPOINT, read_state, restore_optimizer, save_checkpoint
from rankwise.train.config import TrainConfig
from rankwise.train.distributed import SINGLE, Ranks, barrier, join, sum_gradients, sum_scalar
from rankwise.train.loss import causal_lm_loss
from rankwise.train.memory import activation_checkpointing, mixed_precision
from rankwise.train.run_folder import check_run_folder, create_work_folder, finish_run, work_folder
from rankwise.train.schedule import learning_rate
from rankwise.train.trainable import Trainable

#: ``objective(model, batch [B, T]) -> (summed loss, number of predicted tokens)``; the loop divides by
#: the step's token count, so accumulation over micro-batches gives the mean over the whole step.
Objective = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, int]]


def batch_indices(step: int, micro: int, cfg: TrainConfig, n_windows: int, ranks: Ranks = SINGLE) -> torch.Tensor:
    """Window indices of micro-batch ``micro`` of step ``step`` on ``ranks.rank``: epochs of seeded
    permutations, so the data order is a pure function of (seed, step) and a resumed run sees the same
    batches. The ranks of a data-parallel job split each global micro-batch of ``world × batch_size``
    windows in order: together they see what one process with that batch size would."""
    first = ((step * cfg.grad_accum + micro) * ranks.world + ranks.rank) * cfg.batch_size
    idx = []
    for pos in range(first, first + cfg.batch_size):
        epoch, offset = divmod(pos, n_windows)
        perm = torch.randperm(n_windows, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        idx.append(int(perm[offset]))
    return torch.tensor(idx)


def make_optimizer(cfg: TrainConfig, params: dict[str, nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimizer over ``params`` (the schedule sets each group's lr every step)."""
    settings = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay, **cfg.optimizer_options}
    return build_optimizer(optimizer_config(cfg.optimizer, **settings), list(params.values()))


def _train_step(model: nn.Module, cfg: TrainConfig, train: torch.Tensor, step: int,
                optimizer: torch.optim.Optimizer, objective: Objective, trainable: Trainable,
                ranks: Ranks = SINGLE) -> tuple[float, float, int]:
    """One optimizer step's forward/backward over ``grad_accum`` micro-batches: (mean loss, grad norm, tokens),
    all three over every rank of a data-parallel job.

    The parameters are the optimizer's at this step: a `Trainable` may add or remove some between steps
    (adaptive-rank adapters, LISA)."""
    total, tokens = 0.0, 0
    batches = [train[batch_indices(step, micro, cfg, train.shape[0], ranks)] for micro in range(cfg.grad_accum)]
    n_pred = ranks.world * cfg.grad_accum * cfg.batch_size * (cfg.seq_len - 1)
    for batch in batches:
        with mixed_precision(batch.device, cfg.precision):
            loss, _ = objective(model, batch)
        scaled = loss / n_pred
        extra = trainable.extra_loss(model)
        if extra is not None:
            scaled = scaled + extra / (cfg.grad_accum * ranks.world)
        scaled.backward()  # type: ignore[no-untyped-call]
        total += float(loss.detach())
        tokens += batch.numel()
    live = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    sum_gradients(live, ranks)
    total, tokens = sum_scalar(total, ranks), tokens * ranks.world
    norm = (float(nn.utils.clip_grad_norm_(live, cfg.max_grad_norm)) if cfg.max_grad_norm
            else float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in live]))))  # type: ignore[union-attr]
    return total / n_pred, norm, tokens


def _windows(cfg: TrainConfig, tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    from rankwise.data import windows

    train = windows(cfg.data, "calib", cfg.seq_len, tokenizer=tokenizer)
    held = (windows(cfg.eval_data or cfg.data, "eval", cfg.seq_len, tokens=cfg.eval_tokens, tokenizer=tokenizer)
            if cfg.eval_tokens else None)
    return train, held


def _perplexity(model: nn.Module, held: torch.Tensor | None, cfg: TrainConfig, progress: bool,
                desc: str) -> float | None:
    from rankwise.eval.perplexity import perplexity

    return None if held is None else perplexity(model, held, cfg.eval_batch_size, progress, desc).perplexity


def train(
    config: TrainConfig,
    trainable: Trainable,
    out: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    train_windows: torch.Tensor | None = None,
    eval_windows: torch.Tensor | None = None,
    objective: Objective | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``trainable`` on ``config.model`` and write the run folder ``out``; returns the report.

    ``model``/``tokenizer``/``train_windows`` [N, T]/``eval_windows`` override loading from the config
    (tests use a tiny model). ``objective`` defaults to the causal-LM loss. Every check runs before
    anything is written; progress then lives in a hidden ``.<out>.partial`` folder until the run ends,
    and ``resume=True`` continues from its last checkpoint (refusing a changed config).
    """
    out_path = Path(out)
    ranks = join()
    check_run_folder(out_path, config, resume, overwrite)
    from rankwise.data.sources import documents
    from rankwise.io.loading import check_seq_len, load_model, model_config

    if train_windows is None:  # the data sources exist and hold text: checked before the slow load
        documents(config.data, "calib")
        if config.eval_tokens:
            documents(config.eval_data or config.data, "eval")
    if model is None:
        check_seq_len(model_config(config.model), config.seq_len)  # from config.json, before the slow load
        model, tokenizer = load_model(config.model)
    else:
        to_dict = getattr(getattr(model, "config", None), "to_dict", None)
        check_seq_len(to_dict() if callable(to_dict) else {}, config.seq_len)
    if train_windows is None:
        train_windows, eval_windows = _windows(config, tokenizer)
    assert train_windows is not None
    trainable.check(model)
    optimizer_config(config.optimizer, **config.optimizer_options)  # unknown names or knobs: one line, now
    objective = objective or (lambda m, b: causal_lm_loss(m, b, config.loss_chunk))
    if ranks.main:
        create_work_folder(out_path, config, resume)
    barrier(ranks)
    work = work_folder(out_path)
    torch.manual_seed(config.seed)
    state = read_state(work) if resume else None
    started = time.perf_counter()
    if state is None:
        ppl_before = _perplexity(model, eval_windows, config, progress and ranks.main, "before · perplexity")
        trainable.prepare(model, train_windows, progress and ranks.main)
        state = {"step": 0, "losses": [], "tokens": 0, "perplexity_before": ppl_before, "elapsed_s": 0.0,
                 "train_s": 0.0, "skipped_steps": 0}
    else:
        trainable.restore(model, work / CHECKPOINT)
    params = trainable.parameters(model)
    optimizer = make_optimizer(config, params)
    if state["step"] > 0:
        restore_optimizer(work, optimizer)
    state = _loop(model, config, train_windows, optimizer, trainable, state, work, objective, progress, ranks)
    state["elapsed_s"] += time.perf_counter() - started
    state["perplexity_after"] = _perplexity(model, eval_windows, config, progress and ranks.main,
                                            "after · perplexity")
    report = _report(model, config, trainable, optimizer, state, ranks)
    if ranks.main:  # one writer; the other ranks wait until the run folder exists
        finish_run(out_path, work, trainable, model, tokenizer, config, report, overwrite)
    barrier(ranks)
    return report


def _loop(model: nn.Module, cfg: TrainConfig, train: torch.Tensor, optimizer: torch.optim.Optimizer,
          trainable: Trainable, state: dict[str, Any], work: Path, objective: Objective,
          progress: bool, ranks: Ranks) -> dict[str, Any]:
    model.train()
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"train · {trainable.kind}", unit="step",
               disable=not (progress and ranks.main))
    t0, tokens0, train_s0 = time.perf_counter(), state["tokens"], state.get("train_s", 0.0)
    try:
        with activation_checkpointing(model, cfg.checkpointing):
            for step in range(state["step"], cfg.steps):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
                trainable.before_step(step, model, optimizer)
                optimizer.zero_grad(set_to_none=True)
                loss, norm, tokens = _train_step(model, cfg, train, step, optimizer, objective, trainable, ranks)
                finite = math.isfinite(loss) and math.isfinite(norm)
                if not finite and cfg.optimizer_options.get("nan_policy") == "skip":
                    optimizer.zero_grad(set_to_none=True)  # the step is skipped and counted, as asked
                    state["skipped_steps"] = state.get("skipped_steps", 0) + 1
                    state["step"] = step + 1
                    bar.update(1)
                    continue
                if not finite:
                    last = read_state(work)
                    kept = (f"the last good checkpoint (step {last['step']}) is kept in {work}" if last
                            else "no checkpoint had been written yet")
                    what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {norm}"
                    raise RankwiseError(f"{what} at step {step + 1}; training stopped and {kept}; "
                                        "lower --lr (and use --overwrite to start again)")
                optimizer.step()
                state["losses"].append(loss)
                state["tokens"] += tokens
                state["step"] = step + 1
                state["train_s"] = train_s0 + time.perf_counter() - t0
                rate = (state["tokens"] - tokens0) / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:.0f}")
                bar.update(1)
                if state["step"] % cfg.checkpoint_every == 0 and state["step"] < cfg.steps and ranks.main:
                    save_checkpoint(work, trainable, model, optimizer, state)
    finally:
        bar.close()
        model.eval()
    return state


def _report(model: nn.Module, cfg: TrainConfig, trainable: Trainable, optimizer: torch.optim.Optimizer,
            state: dict[str, Any], ranks: Ranks) -> dict[str, Any]:
    from rankwise.eval.params import parameter_count
    from rankwise.optim import state_bytes

    losses = state["losses"]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "trainable": trainable.kind, "model": cfg.model, "steps": state["step"], "tokens_trained": state["tokens"],
        "trainable_parameters": sum(p.numel() for p in trainable.parameters(model).values()),
        "total_parameters": parameter_count(model), "optimizer": cfg.optimizer,
        "optimizer_state_bytes": state_bytes(optimizer),
        "skipped_steps": state.get("skipped_steps", 0), "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None, "losses": losses,
        "perplexity_before": state["perplexity_before"], "perplexity_after": state["perplexity_after"],
        "elapsed_s": state["elapsed_s"], "train_s": state.get("train_s", 0.0),
        "tokens_per_s": state["tokens"] / max(state.get("train_s", 0.0), 1e-9),
        "peak_rss_mb": peak_kb / 1024, "processes": ranks.world, "config": cfg.to_yaml_dict(),
        **trainable.describe(),
    }
