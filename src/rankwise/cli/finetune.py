"""`rankwise finetune MODEL`: train an SVD-initialised adapter on text windows and write a run folder."""

from __future__ import annotations

import argparse
from typing import Any

from rankwise.cli.common import positive_int

EXAMPLES = """examples:
  rankwise finetune smollm2-135m --method pissa --rank 16 --data tinystories --steps 200 --out runs/pissa
  rankwise finetune smollm2-135m --method lora --rank 8 --targets q_proj,v_proj --lr 1e-4 --out runs/lora
  rankwise finetune smollm2-135m --method corda --mode kpm --calib-data wiki --out runs/corda
  rankwise finetune smollm2-135m --method pissa --rank 16 --steps 200 --out runs/pissa --resume

The run folder holds adapter.safetensors + adapter.yaml (load with rw.adapters.load_adapter),
config.yaml (the resolved settings) and report.json (losses, perplexity before/after, speed).
An interrupted run keeps its last checkpoint in .<out>.partial; rerun the same command with --resume."""


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


def register(sub: Any) -> None:
    p = sub.add_parser("finetune", help="fine-tune a low-rank adapter (LoRA, PiSSA, MiLoRA, CorDA, EVA)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="bundled name (smollm2-135m), HF folder, .gguf file or hub id")
    p.add_argument("--out", required=True, help="run folder to write")
    a = p.add_argument_group("adapter")
    a.add_argument("--method", default="lora", help="lora, pissa, milora, corda or eva (default lora)")
    a.add_argument("--rank", type=positive_int, default=16)
    a.add_argument("--alpha", type=_float, help="scaling numerator (default: alpha = rank, scaling 1)")
    a.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(rank)")
    a.add_argument("--dropout", type=_float, help="dropout on the adapter input")
    a.add_argument("--targets", default="all-linear", help="all-linear, comma-separated suffixes, or re:REGEX")
    a.add_argument("--svd", choices=["randomized", "exact"], help="init SVD of pissa (default randomized)")
    a.add_argument("--mode", choices=["ipm", "kpm"], help="corda: train the largest (ipm) or smallest (kpm) part")
    a.add_argument("--rho", type=_float, help="eva: a layer may get at most rho x rank components")
    a.add_argument("--calib-data", help="corda/eva calibration text (default wiki)")
    a.add_argument("--calib-windows", type=positive_int, help="corda/eva calibration windows (default 32)")
    t = p.add_argument_group("training")
    t.add_argument("--data", default="tinystories", help="training text: its 'calib' split (default tinystories)")
    t.add_argument("--eval-data", help="held-out text ('eval' split); default: --data")
    t.add_argument("--steps", type=positive_int, default=200)
    t.add_argument("--lr", type=_float, default=2e-4)
    t.add_argument("--batch-size", type=positive_int, default=4)
    t.add_argument("--grad-accum", type=positive_int, default=1)
    t.add_argument("--seq-len", type=positive_int, default=256)
    t.add_argument("--warmup", type=int, default=10, help="warm-up steps (default 10)")
    t.add_argument("--weight-decay", type=_float, default=0.0)
    t.add_argument("--max-grad-norm", type=_float, default=1.0, help="gradient clipping; 0 disables it")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-tokens", type=int, default=8192, help="held-out tokens scored before/after; 0 skips")
    t.add_argument("--checkpoint-every", type=positive_int, default=50)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run with the same settings")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def parse_targets(text: str) -> str | list[str]:
    if text == "all-linear" or text.startswith("re:"):
        return text
    return [t.strip() for t in text.split(",") if t.strip()]


def build_config(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from rankwise.adapters.config import make_config
    from rankwise.adapters.train import FinetuneConfig
    from rankwise.errors import RankwiseError

    calib = {k: v for k, v in {"source": args.calib_data, "windows": args.calib_windows}.items() if v is not None}
    adapter = make_config(args.method, rank=args.rank, alpha=args.alpha, rslora=args.rslora or None,
                          dropout=args.dropout, svd=args.svd, mode=args.mode, rho=args.rho, seed=args.seed,
                          calibration=calib or None)
    try:
        return FinetuneConfig(
            model=args.model, adapter=adapter, targets=parse_targets(args.targets), data=args.data,
            eval_data=args.eval_data, seq_len=args.seq_len, batch_size=args.batch_size, grad_accum=args.grad_accum,
            steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup,
            max_grad_norm=args.max_grad_norm or None, seed=args.seed, eval_tokens=args.eval_tokens,
            checkpoint_every=args.checkpoint_every)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RankwiseError(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def run(args: argparse.Namespace) -> int:
    from rankwise.adapters.train import finetune

    config = build_config(args)
    report = finetune(config, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"method          {report['method']} (rank {config.adapter.rank}), {report['steps']} steps, "
          f"{report['tokens_trained']:,} tokens")
    print(f"trainable       {report['trainable_parameters']:,} of {report['total_parameters']:,} parameters")
    print(f"train loss      {report['loss_first']:.4f} -> {report['loss_last']:.4f}")
    if report["perplexity_before"] is not None:
        print(f"perplexity      {report['perplexity_before']:.3f} -> {report['perplexity_after']:.3f} "
              f"({config.eval_data or config.data} eval)")
    print(f"speed           {report['tokens_per_s']:.0f} tokens/s, peak RSS {report['peak_rss_mb']:.0f} MB")
    print(f"wrote {args.out}")
    return 0
