"""`AdapterCallback`: rankwise adapters that need more than a plain optimizer step, under Hugging Face's
`Trainer`: regularisers (SORSA, KaSA, AdaLoRA, IncreLoRA) join the loss and rank schedules (AdaLoRA,
IncreLoRA) run after every optimizer step, exactly as in rankwise's own training loop.

    from rankwise.adapters.callback import AdapterCallback
    Trainer(model=model, args=args, train_dataset=data, callbacks=[AdapterCallback()]).train()
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rankwise.adapters.apply import adapter_layers
from rankwise.adapters.hooks import regulariser, schedule_step
from rankwise.errors import RankwiseError


def _add_regulariser(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook on the whole model: the loss it returns (when labels were given) gains the regulariser."""
    loss = getattr(output, "loss", None)
    if loss is None or not module.training:
        return output
    extra = regulariser(module)
    if extra is not None:
        output.loss = loss + extra
    return output


class AdapterCallback(TrainerCallback):  # type: ignore[misc]
    """Add it to a `Trainer` whose model carries rankwise adapters (``rw.adapt``); harmless for methods that
    need neither a regulariser nor a schedule."""

    def __init__(self) -> None:
        self._handle: RemovableHandle | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, **kwargs: Any) -> None:
        if model is None or not adapter_layers(model):
            raise RankwiseError("AdapterCallback needs a model with rankwise adapters; call rw.adapt(model, ...) "
                                "before creating the Trainer")
        if self._handle is None:
            self._handle = model.register_forward_hook(_add_regulariser)

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          model: nn.Module | None = None, optimizer: Any = None, **kwargs: Any) -> None:
        # The step just taken is global_step + 1 (Trainer counts it after this event); the gradients are
        # still on the parameters, as a schedule expects.
        if model is not None:
            schedule_step(model, state.global_step + 1, state.max_steps, optimizer)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
