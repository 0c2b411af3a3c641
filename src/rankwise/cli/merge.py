"""`rankwise merge CONFIG --out FOLDER`: merge models or adapters as a mergekit-style YAML config says."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = """examples:
  rankwise merge ties.yaml --out merged/
  rankwise merge ties.yaml --out merged/ --dry-run      # validate and print the plan, read no tensor data

A config in mergekit's format, e.g.:
  merge_method: ties
  base_model: smollm2-135m
  models:
    - model: finetune-a/
      parameters: {weight: 0.5, density: 0.5}
    - model: finetune-b/
      parameters: {weight: 0.5, density: 0.5}
  dtype: float32

Methods: linear, slerp, task_arithmetic, ties, dare_linear, dare_ties, tsv, iso_c, iso_cts, regmean
(and, with `output: adapter`, merges of adapters in factored form). Everything is checked (methods,
parameters, every model's config and tensor headers) before any tensor data is read."""


def register(sub: Any) -> None:
    p = sub.add_parser("merge", help="merge models (or adapters) as a mergekit-style YAML config says",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="merge config (YAML, mergekit's format)")
    p.add_argument("--out", required=True, help="output folder (a model folder, or an adapter folder)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the plan without merging (default: merge)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rankwise.io.atomic import check_output_folder
    from rankwise.merge import plan, run

    if args.dry_run:
        print(plan(args.config).describe())
        return 0
    check_output_folder(args.out, args.overwrite)
    result = run(args.config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {result.folder} ({result.plan.method.name} of {len(result.plan.inputs)} models, "
          f"{len(result.plan.tasks)} tensors)")
    return 0
