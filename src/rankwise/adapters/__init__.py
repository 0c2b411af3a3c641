"""Low-rank adapters: SVD-initialised methods (LoRA, PiSSA, MiLoRA, CorDA, EVA), merge/unmerge, PEFT I/O.

    import rankwise as rw
    rw.adapt(model, rw.adapters.PiSSA(rank=16), targets="all-linear")
    rw.adapters.trainable_parameters(model)
"""

from rankwise.adapters.apply import (
    adapt,
    adapter_config,
    adapter_layers,
    merge,
    merge_and_unwrap,
    trainable_parameters,
    unmerge,
)
from rankwise.adapters.config import (
    METHODS,
    AdapterConfig,
    AdapterInit,
    CalibrationData,
    config_from_dict,
    get_method,
    make_config,
    method_names,
)
from rankwise.adapters.corda import CorDA
from rankwise.adapters.eva import EVA
from rankwise.adapters.layer import AdapterLinear
from rankwise.adapters.lora import LoRA
from rankwise.adapters.milora import MiLoRA
from rankwise.adapters.peft_io import export_peft, load_peft
from rankwise.adapters.pissa import PiSSA
from rankwise.adapters.run_io import load_adapter, save_adapter
from rankwise.adapters.finetune import AdapterTrainable, FinetuneConfig, finetune

__all__ = [
    "EVA",
    "METHODS",
    "AdapterConfig",
    "AdapterInit",
    "AdapterLinear",
    "AdapterTrainable",
    "CalibrationData",
    "CorDA",
    "FinetuneConfig",
    "LoRA",
    "MiLoRA",
    "PiSSA",
    "adapt",
    "adapter_config",
    "adapter_layers",
    "config_from_dict",
    "export_peft",
    "finetune",
    "get_method",
    "load_adapter",
    "load_peft",
    "make_config",
    "merge",
    "merge_and_unwrap",
    "method_names",
    "save_adapter",
    "trainable_parameters",
    "unmerge",
]
