"""Low-rank adapters: SVD-initialised methods (LoRA, PiSSA, MiLoRA, CorDA, EVA), SVD-form, random-basis, sparse
and adaptive-rank methods (SVFit, SORSA, SALT, KaSA, NOLA, LIFT, AdaLoRA, IncreLoRA), merge/unmerge, PEFT I/O.

    import rankwise as rw
    rw.adapt(model, rw.adapters.PiSSA(rank=16), targets="all-linear")
    rw.adapters.trainable_parameters(model)
"""

from rankwise.adapters.adalora import AdaLoRA
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
from rankwise.adapters.finetune import AdapterTrainable, FinetuneConfig, finetune
from rankwise.adapters.increlora import IncreLoRA
from rankwise.adapters.kasa import KaSA
from rankwise.adapters.layer import AdapterLinear
from rankwise.adapters.lift import LIFT
from rankwise.adapters.lora import LoRA
from rankwise.adapters.milora import MiLoRA
from rankwise.adapters.nola import NOLA
from rankwise.adapters.peft_io import export_peft, load_peft
from rankwise.adapters.pissa import PiSSA
from rankwise.adapters.run_io import load_adapter, save_adapter
from rankwise.adapters.salt import SALT
from rankwise.adapters.sorsa import SORSA
from rankwise.adapters.svfit import SVFit
from rankwise.adapters.variant import Variant

__all__ = [
    "EVA",
    "LIFT",
    "METHODS",
    "NOLA",
    "SALT",
    "SORSA",
    "AdaLoRA",
    "AdapterCallback",
    "AdapterConfig",
    "AdapterInit",
    "AdapterLinear",
    "AdapterTrainable",
    "CalibrationData",
    "CorDA",
    "FinetuneConfig",
    "IncreLoRA",
    "KaSA",
    "LoRA",
    "MiLoRA",
    "PiSSA",
    "SVFit",
    "Variant",
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


def __getattr__(name: str) -> object:
    # The Trainer callback imports transformers: loaded on first use, so `import rankwise` stays light.
    if name == "AdapterCallback":
        from rankwise.adapters.callback import AdapterCallback

        return AdapterCallback
    raise AttributeError(f"module 'rankwise.adapters' has no attribute {name!r}")
