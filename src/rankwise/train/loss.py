"""Causal-LM loss without full-vocabulary logits for every position at once.

The gradient of the summed cross-entropy with respect to the final hidden states h is
(softmax(h Eᵀ) − onehot) E, and with respect to a trainable head E it is (softmax(h Eᵀ) − onehot)ᵀ h:
both can be formed chunk by chunk in the forward pass. Only one chunk of logits [chunk, V] exists at
a time and nothing vocabulary-sized is kept for the backward pass (nor recomputed) but the head's
own gradient, which a trainable head needs anyway.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankwise.eval.perplexity import hidden_and_head


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk: int) -> torch.Tensor:
        grad = torch.empty_like(hidden)
        want_w, want_b = ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        grad_w = torch.zeros(weight.shape, dtype=torch.float32) if want_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32) if want_b else None
        total = torch.zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = nn.functional.linear(h, weight, bias).float()  # [c, V]
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            probs[torch.arange(t.numel()), t] -= 1.0  # d(loss)/d(logits) [c, V]
            grad[start : start + chunk] = probs.to(weight.dtype) @ weight
            if grad_w is not None:
                grad_w.addmm_(probs.mT, h.float())
            if grad_b is not None:
                grad_b += probs.sum(0)
        ctx.save_for_backward(grad, grad_w, grad_b)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out.float()
        gw = None if grad_w is None else (grad_w * scale)
        gb = None if grad_b is None else (grad_b * scale)
        return grad * grad_out.to(grad.dtype), gw, gb, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                 targets: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Summed cross-entropy of ``hidden`` [N, d] through the head ``weight`` [V, d] (+ ``bias`` [V]) against
    ``targets`` [N] (int64); differentiable with respect to ``hidden`` and, where they require it, the head's
    weight and bias (a tied embedding then gets the head's share of its gradient)."""
    out: torch.Tensor = _ChunkedLinearCE.apply(hidden, weight, bias, targets, chunk)  # type: ignore[no-untyped-call]
    return out


def causal_lm_loss(model: nn.Module, batch: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL of ``batch`` [B, T] (differentiable) and the number of predicted tokens."""
    targets = batch[:, 1:].reshape(-1)
    parts = hidden_and_head(model)
    head_weight = getattr(parts[1], "weight", None) if parts else None
    if parts is None or not isinstance(parts[1], nn.Linear) or not isinstance(head_weight, torch.Tensor):
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1]
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum")
        return loss, targets.numel()
    body, head = parts
    hidden = body(input_ids=batch, use_cache=False).last_hidden_state[:, :-1].reshape(targets.numel(), -1)
    bias = getattr(head, "bias", None)
    return chunked_linear_cross_entropy(hidden, head_weight, bias, targets, chunk), targets.numel()
