"""Healing: after compression, train the low-rank factors (optionally the norms) for a few steps so
the compressed model's next-token distribution matches the dense model's (knowledge distillation,
KL(teacher ‖ student) per token), through rankwise's one training loop.

The KL is computed chunk by chunk: its gradient with respect to the student's logits is
softmax(student) − softmax(teacher), so each chunk's gradient with respect to the student's final
hidden states is formed in the forward pass and only one chunk of logits [chunk, V] exists at a time.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rankwise.errors import RankwiseError
from rankwise.eval.perplexity import hidden_and_head
from rankwise.modules.lowrank import LowRankLinear
from rankwise.train.run_folder import work_folder
from rankwise.train.trainable import WholeModelCheckpoints


class _ChunkedKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, teacher_hidden: torch.Tensor,
                teacher_weight: torch.Tensor, chunk: int) -> torch.Tensor:
        grad = torch.empty_like(hidden)
        total = torch.zeros((), dtype=torch.float32)
        # Logits in fp32 even under bf16 autocast: the KL of two close distributions is a small
        # difference of large numbers, which bf16 logits (3 significant digits) would drown.
        hidden, weight = hidden.float(), weight.float()
        teacher_hidden, teacher_weight = teacher_hidden.float(), teacher_weight.float()
        for start in range(0, hidden.shape[0], chunk):
            part = slice(start, start + chunk)
            log_q = nn.functional.linear(hidden[part], weight).float().log_softmax(-1)  # student [c, V]
            log_p = nn.functional.linear(teacher_hidden[part], teacher_weight).float().log_softmax(-1)
            p = log_p.exp()
            total += (p * (log_p - log_q)).sum()
            grad[part] = ((log_q.exp_() - p) @ weight).to(grad.dtype)  # d KL / d hidden
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * grad_out.to(grad.dtype), None, None, None, None


def _body_and_head_weight(model: nn.Module) -> tuple[nn.Module, torch.Tensor]:
    parts = hidden_and_head(model)
    weight = getattr(parts[1], "weight", None) if parts else None
    if parts is None or getattr(parts[1], "bias", None) is not None or not isinstance(weight, torch.Tensor):
        raise RankwiseError("healing needs a causal LM with a decoder body and a bias-free linear LM head")
    return parts[0], weight


def distillation_loss(student: nn.Module, teacher: nn.Module, batch: torch.Tensor,
                      chunk: int = 512) -> tuple[torch.Tensor, int]:
    """Summed KL(teacher ‖ student) over the next-token distributions of ``batch`` [B, T] positions
    0..T−2 (those that predict a token), and that count. Differentiable for the student only."""
    body, weight = _body_and_head_weight(student)
    t_body, t_weight = _body_and_head_weight(teacher)
    n = batch.shape[0] * (batch.shape[1] - 1)
    with torch.no_grad():
        t_hidden = t_body(input_ids=batch, use_cache=False).last_hidden_state[:, :-1].reshape(n, -1)
    hidden = body(input_ids=batch, use_cache=False).last_hidden_state[:, :-1].reshape(n, -1)
    with torch.autocast("cpu", enabled=False):
        out: torch.Tensor = _ChunkedKL.apply(  # type: ignore[no-untyped-call]
            hidden, weight.detach(), t_hidden, t_weight.detach(), chunk)
    return out, n


class _Diverged(Exception):
    """Raised from the objective when the loss rose for too many steps in a row."""


@dataclass
class _Monitor:
    """Per-step distillation loss. Batches differ in difficulty, so divergence is judged on an
    exponential moving average: ``patience`` steps in a row above its lowest value by ``margin``."""

    patience: int
    margin: float = 0.1
    smoothing: float = 0.3
    losses: list[float] = field(default_factory=list)
    average: float = math.nan
    best: float = math.inf
    bad: int = 0

    def add(self, value: float) -> None:
        self.losses.append(value)
        first = math.isnan(self.average)
        self.average = value if first else (1 - self.smoothing) * self.average + self.smoothing * value
        self.best = min(self.best, self.average)
        self.bad = self.bad + 1 if self.average > self.best * (1.0 + self.margin) else 0
        if self.bad >= self.patience:
            raise _Diverged(f"the distillation loss rose for {self.bad} steps in a row "
                            f"(smoothed {self.best:.4f} -> {self.average:.4f} nats/token)")


def heal_parameters(model: nn.Module, norms: bool) -> dict[str, nn.Parameter]:
    """The tensors healing trains: every `LowRankLinear`'s factors and bias, and with ``norms`` the
    normalisation weights (modules whose class name ends in "Norm")."""
    names = {name for name, m in model.named_modules() if isinstance(m, LowRankLinear)}
    if norms:
        names |= {name for name, m in model.named_modules() if type(m).__name__.endswith("Norm")}
    return {n: p for n, p in model.named_parameters()
            if any(n.startswith(prefix + ".") for prefix in names) and p.is_floating_point()}


class HealTrainable(WholeModelCheckpoints):
    """The loop's view of healing: the factors (and optionally norms) train; checkpoints hold the model."""

    kind = "heal"

    def __init__(self, norms: bool) -> None:
        self.norms = norms

    def check(self, model: nn.Module) -> None:
        if not heal_parameters(model, self.norms):
            raise RankwiseError("the model has no low-rank layers to heal; compress it first (rw.compress.apply)")

    def prepare(self, model: nn.Module, train_windows: torch.Tensor, progress: bool) -> None:
        model.requires_grad_(False)
        for p in heal_parameters(model, self.norms).values():
            p.requires_grad_(True)

    def write_final(self, model: nn.Module, tokenizer: Any, folder: Path) -> None:
        """Nothing: the healed student lives on in memory, and its caller saves it."""


@dataclass
class HealReport:
    """What healing did: steps run, the per-step mean KL (nats per token), and why it stopped early
    (``diverged``; the unhealed weights were then put back)."""

    steps: int
    losses: list[float]
    diverged: str | None
    trained_parameters: int

    def line(self) -> str:
        if self.diverged:
            return f"healing stopped: {self.diverged}; the unhealed model is kept"
        # each step sees new windows, so one step's KL is noisy: compare the means of the first and last tenth
        k = max(1, len(self.losses) // 10)
        first = sum(self.losses[:k]) / k if self.losses else math.nan
        last = sum(self.losses[-k:]) / k if self.losses else math.nan
        return (f"healing: {self.steps} steps on {self.trained_parameters:,} parameters, distillation KL "
                f"{first:.4f} -> {last:.4f} nats/token (mean of the first and last {k} steps)")


def checkpoint_interval(steps: int) -> int:
    """Steps between healing checkpoints (each holds the whole model and Adam's moments): about four
    per run, at least every 50 steps."""
    return max(1, min(50, math.ceil(steps / 4)))


def heal(student: nn.Module, teacher: nn.Module, windows: torch.Tensor, steps: int, lr: float = 1e-4,
         norms: bool = False, batch_size: int = 4, patience: int = 10, seed: int = 0,
         progress: bool = True, run_dir: str | os.PathLike[str] | None = None, resume: bool = False) -> HealReport:
    """Train ``student``'s low-rank factors (and norms with ``norms``) in place for ``steps`` AdamW steps
    to match ``teacher``'s (the dense model's) next-token distributions on ``windows`` [N, T].

    NaN, or a loss above its best for ``patience`` steps in a row, stops training and puts the
    unhealed weights back (the report says so). With ``run_dir`` (a folder healing owns), checkpoints
    are written every `checkpoint_interval` steps to its hidden ``.partial`` sibling, which an
    interrupted run leaves behind: the same call with ``resume=True`` (and the same unhealed student)
    continues from the last one to the same bytes. Nothing is left once healing ends. Example:
    ``rw.compress.heal(compressed, dense, rw.data.windows("wiki", "calib", 256, n=400, seed=0), steps=100)``.
    """
    from rankwise.linalg.bf16 import cpu_has_bf16_units
    from rankwise.train import TrainConfig, train

    if steps <= 0:
        raise RankwiseError(f"heal steps must be a positive number, got {steps}")
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise RankwiseError(f"healing windows must be [N, T] with T >= 2, got {tuple(windows.shape)}")
    params = heal_parameters(student, norms)
    HealTrainable(norms).check(student)
    snapshot = {name: p.detach().clone() for name, p in params.items()}
    flags = {p: p.requires_grad for p in [*student.parameters(), *teacher.parameters()]}
    teacher.eval().requires_grad_(False)
    monitor = _Monitor(patience)

    def objective(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        loss, n = distillation_loss(model, teacher, batch)
        monitor.add(float(loss.detach()) / n)
        return loss, n

    config = TrainConfig(steps=steps, lr=lr, batch_size=min(batch_size, windows.shape[0]), seq_len=windows.shape[1],
                         eval_tokens=0, checkpoint_every=checkpoint_interval(steps) if run_dir else steps + 1,
                         warmup_steps=min(10, steps // 10), seed=seed,
                         # a compressed model's activations for a few windows fit easily: spend no step time
                         # recomputing them (checkpointing never changes the result)
                         checkpointing="none", precision="bf16" if cpu_has_bf16_units() else "fp32")
    diverged = None
    losses = monitor.losses
    with contextlib.ExitStack() as stack:
        folder = Path(run_dir) if run_dir is not None else \
            Path(stack.enter_context(tempfile.TemporaryDirectory())) / "heal"
        try:
            report = train(config, HealTrainable(norms), folder, model=student, train_windows=windows,
                           objective=objective, progress=progress, resume=resume, overwrite=True)
            losses = list(report["losses"])  # every step's, also those before a resume
        except (_Diverged, RankwiseError) as exc:
            if isinstance(exc, RankwiseError) and "became" not in str(exc):
                raise  # a bad setting, not a diverging run
            diverged = str(exc) if isinstance(exc, _Diverged) else "the loss or its gradient became NaN or inf"
            shutil.rmtree(work_folder(folder), ignore_errors=True)  # a diverged run is not resumed
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(snapshot[name])
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
            student.eval()
        shutil.rmtree(folder, ignore_errors=True)  # the loop's (empty) final folder
    return HealReport(len(losses), losses, diverged, sum(p.numel() for p in params.values()))
