"""`rankwise export-peft RUN --out FOLDER`: a run's adapter as a PEFT LoRA for the unchanged base model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rankwise.cli.common import positive_int

EXAMPLES = """examples:
  rankwise export-peft runs/pissa --out adapter/
  rankwise export-peft my-adapter/ --model smollm2-135m --out adapter/

Load it with: peft.PeftModel.from_pretrained(base_model, "adapter/").
PiSSA, MiLoRA and CorDA adapters (which change the base weight) are written exactly as a
rank-2r LoRA on the untouched base."""


def register(sub: Any) -> None:
    p = sub.add_parser("export-peft", help="write a run's adapter as a PEFT LoRA folder",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a finetune run folder (or a folder written by rw.adapters.save_adapter)")
    p.add_argument("--out", required=True, help="PEFT adapter folder to write")
    p.add_argument("--model", help="base model (default: the run's config.yaml model)")
    p.add_argument("--rank", type=positive_int, default=None,
                   help="rank of the truncated-SVD export for updates not of B·A form (lift); each layer's relative "
                        "error is printed (default: none, such updates are refused)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder (default: refuse)")
    p.set_defaults(func=run)


def base_model_spec(run_folder: str, model: str | None) -> str:
    """The base model of a run: ``--model`` or the ``model`` in the run's config.yaml."""
    import yaml

    from rankwise.adapters.run_io import ADAPTER_WEIGHTS, read_adapter_meta
    from rankwise.errors import RankwiseError
    from rankwise.io.tensors import file_entries

    read_adapter_meta(run_folder)  # a clear error if this is not an adapter folder
    file_entries(Path(run_folder) / ADAPTER_WEIGHTS)  # a truncated file fails now, not after the load
    if model:
        return model
    config = Path(run_folder) / "config.yaml"
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise RankwiseError(f"{config} is not valid YAML; fix it or pass the base model with --model") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise RankwiseError(f"{run_folder} does not name its base model (no config.yaml); pass --model")
    spec: str = data["model"]
    return spec


def run(args: argparse.Namespace) -> int:
    from rankwise.adapters import export_peft, load_adapter
    from rankwise.io.atomic import check_output_folder
    from rankwise.io.loading import load_model

    check_output_folder(args.out, args.overwrite)
    spec = base_model_spec(args.run, args.model)
    model, _ = load_model(spec)
    load_adapter(model, args.run)
    export_peft(model, args.out, base_model=spec, overwrite=args.overwrite, rank=args.rank)
    print(f"wrote {args.out} (PEFT LoRA for base model {spec})")
    return 0
