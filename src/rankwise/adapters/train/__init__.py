"""The causal-LM fine-tuning loop for adapters: config, loss, schedule, checkpoints, driver."""

from rankwise.adapters.train.config import FinetuneConfig
from rankwise.adapters.train.loop import finetune
from rankwise.adapters.train.loss import causal_lm_loss, chunked_linear_cross_entropy
from rankwise.adapters.train.schedule import learning_rate

__all__ = ["FinetuneConfig", "causal_lm_loss", "chunked_linear_cross_entropy", "finetune", "learning_rate"]
