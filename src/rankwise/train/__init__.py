"""The one training loop: any trainable set (adapters, all weights, sampled layers), any optimizer.

    from rankwise.train import TrainConfig, FullTrainable, train
    report = train(TrainConfig(steps=100, optimizer="lowrank_adamw"), FullTrainable(), "runs/full")
"""

from rankwise.train.config import TrainConfig
from rankwise.train.lisa import LisaConfig, LisaTrainable
from rankwise.train.loop import Objective, batch_indices, make_optimizer, train
from rankwise.train.loss import causal_lm_loss, chunked_linear_cross_entropy
from rankwise.train.schedule import learning_rate
from rankwise.train.trainable import FullTrainable, Trainable

__all__ = [
    "FullTrainable",
    "LisaConfig",
    "LisaTrainable",
    "Objective",
    "TrainConfig",
    "Trainable",
    "batch_indices",
    "causal_lm_loss",
    "chunked_linear_cross_entropy",
    "learning_rate",
    "make_optimizer",
    "train",
]
