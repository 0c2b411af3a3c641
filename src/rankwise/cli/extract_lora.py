"""`rankwise extract-lora FINETUNED --base BASE --rank 64|auto --out FOLDER`: a fine-tune's delta as a PEFT LoRA."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = """examples:
  rankwise extract-lora finetuned/ --base smollm2-135m --rank 64 --out lora/
  rankwise extract-lora finetuned/ --base smollm2-135m --rank auto --budget-rank 64 --out lora-auto/

Each targeted matrix's delta W_ft − W_base is replaced by its truncated SVD (the best rank-r
approximation), written as adapter_config.json + adapter_model.safetensors for peft. --rank auto
spends the size of a uniform rank --budget-rank LoRA where it removes the most error (per-matrix
ranks in rank_pattern). Every matrix's relative error ‖ΔW − ΔŴ‖/‖ΔW‖ is printed."""


def rank_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {value}")
    return value


def register(sub: Any) -> None:
    from rankwise.cli.common import positive_int

    p = sub.add_parser("extract-lora", help="extract a fine-tune's weight delta as a PEFT LoRA (truncated SVD)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("finetuned", help="fine-tuned model (folder, .gguf file or bundled name)")
    p.add_argument("--base", required=True, help="the base model it was fine-tuned from")
    p.add_argument("--rank", type=rank_arg, default=64,
                   help="LoRA rank, or 'auto' (per-matrix ranks under a budget; default 64)")
    p.add_argument("--budget-rank", type=positive_int, default=64,
                   help="with --rank auto: total size equal to a uniform LoRA of this rank (default 64)")
    p.add_argument("--alloc", default="threshold",
                   help="with --rank auto: 'threshold' (least total squared error, default), 'energy', "
                        "'global_relative' or another compress allocator")
    p.add_argument("--rank-multiple", type=positive_int, default=8, help="auto ranks are multiples of this (default 8)")
    p.add_argument("--include", help="regex of the tensor names to extract (default: the decoder blocks' matrices)")
    p.add_argument("--out", required=True, help="PEFT adapter folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rankwise.cli.common import print_table
    from rankwise.merge.extract import DEFAULT_INCLUDE, extract_lora

    report = extract_lora(args.finetuned, args.base, args.out, args.rank, budget_rank=args.budget_rank,
                          alloc=args.alloc, rank_multiple=args.rank_multiple, include=args.include or DEFAULT_INCLUDE,
                          overwrite=args.overwrite, progress=not args.quiet)
    rows = [[m.name, f"{m.shape[0]}x{m.shape[1]}", str(m.rank), f"{m.relative_error:.4f}"] for m in report.matrices]
    print_table(rows, ["matrix", "shape", "rank", "relative error"])
    print(f"wrote {report.folder}: {len(report.matrices)} matrices, {report.params:,} LoRA parameters"
          + (f"; {report.skipped_unchanged} unchanged matrices skipped" if report.skipped_unchanged else ""))
    if report.dropped:
        print(f"note: {len(report.dropped)} changed tensors are not extracted (not targeted matrices), e.g. "
              f"{report.dropped[0]}")
    return 0
