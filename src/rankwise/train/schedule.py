"""Learning-rate schedule: linear warm-up, then cosine decay (a pure function of the step)."""

from __future__ import annotations

import math


def learning_rate(step: int, total: int, peak: float, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """LR for optimizer step ``step`` (0-based) of ``total``: ramps to ``peak`` over ``warmup`` steps,
    then follows a half cosine down to ``min_ratio · peak`` at the last step."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(total - warmup - 1, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
