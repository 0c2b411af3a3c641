"""`rankwise info MODEL`: architecture, parameter counts and every weight-matrix type."""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

EXAMPLES = """examples:
  rankwise info smollm2-135m
  rankwise info path/to/hf-folder
  rankwise info model.gguf --json"""


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="architecture, parameters and weight-matrix shapes of a model",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="bundled name (smollm2-135m), HF folder, .gguf file or hub id")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (default: a table)")
    p.set_defaults(func=run)


def model_info(model: Any) -> dict[str, Any]:
    from rankwise.eval.params import module_type, parameter_count, weight_bytes

    shapes: dict[str, dict[str, Any]] = defaultdict(lambda: {"count": 0, "shape": None, "params": 0})
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.ndim != 2 or id(p) in seen:
            continue
        seen.add(id(p))
        entry = shapes[module_type(name)]
        entry["count"] += 1
        entry["shape"] = list(p.shape)
        entry["params"] += p.numel()
    cfg = model.config
    return {
        "architecture": (cfg.architectures or [type(model).__name__])[0],
        "model_type": cfg.model_type,
        "layers": getattr(cfg, "num_hidden_layers", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "vocab_size": getattr(cfg, "vocab_size", None),
        "tied_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "total_parameters": parameter_count(model),
        "weight_bytes": weight_bytes(model),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "matrices": dict(shapes),
    }


def run(args: argparse.Namespace) -> int:
    import json

    from rankwise.cli.common import print_table
    from rankwise.io.loading import load_model

    model, _ = load_model(args.model)
    info = model_info(model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"architecture     {info['architecture']} ({info['model_type']}), {info['layers']} layers, "
          f"hidden {info['hidden_size']}, vocab {info['vocab_size']}")
    print(f"parameters       {info['total_parameters']:,} ({info['weight_bytes'] / 2**20:.1f} MiB as "
          f"{info['dtype']}; tied embeddings counted once: {info['tied_embeddings']})")
    rows = [[t, "x".join(map(str, e["shape"])), str(e["count"]), f"{e['params']:,}"]
            for t, e in info["matrices"].items()]
    print()
    print_table(rows, ["weight matrix", "shape", "count", "parameters"])
    return 0
