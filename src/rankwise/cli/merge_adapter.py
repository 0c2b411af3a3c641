"""`rankwise merge-adapter RUN --out FOLDER`: fold a run's adapter into the base weights, write an HF folder."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = """examples:
  rankwise merge-adapter runs/pissa --out merged/
  rankwise merge-adapter my-adapter/ --model smollm2-135m --out merged/

The result is an ordinary dense model folder (config.json + safetensors + tokenizer)."""


def register(sub: Any) -> None:
    p = sub.add_parser("merge-adapter", help="merge a run's adapter into the base model and save it",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a finetune run folder (or a folder written by rw.adapters.save_adapter)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--model", help="base model (default: the run's config.yaml model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder (default: refuse)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rankwise.adapters import load_adapter, merge_and_unwrap
    from rankwise.cli.export_peft import base_model_spec
    from rankwise.io.atomic import check_output_folder
    from rankwise.io.loading import load_model
    from rankwise.io.saving import save_model

    check_output_folder(args.out, args.overwrite)
    spec = base_model_spec(args.run, args.model)
    model, tokenizer = load_model(spec)
    merge_and_unwrap(load_adapter(model, args.run))
    save_model(model, tokenizer, args.out, overwrite=args.overwrite, produced_by="rankwise merge-adapter",
               manifest={"base_model": spec, "adapter": str(args.run)})
    print(f"wrote {args.out} (base model {spec} with the adapter of {args.run} merged in)")
    return 0
