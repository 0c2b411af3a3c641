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
  rankwise finetune --config runs/pissa/config.yaml --lr 1e-4 --out runs/pissa-lr1e-4
  rankwise finetune smollm2-135m --full --optimizer lowrank_adamw --proj-rank 64 --projector dct --out runs/full
  rankwise finetune smollm2-135m --lisa --lisa-layers 2 --lisa-interval 20 --lr 1e-5 --out runs/lisa

--config FILE reads every setting from a YAML file with the fields of a run's config.yaml
(model, adapter: {method, rank, ...}, data, steps, lr, ...); options given on the command line
override it. The run folder holds adapter.safetensors + adapter.yaml (load with
rw.adapters.load_adapter), config.yaml (the resolved settings) and report.json (losses,
perplexity before/after, speed). With --full or --lisa the run folder is a Hugging Face model
folder instead (rw.load_model, transformers). An interrupted run keeps its last checkpoint in
.<out>.partial; rerun the same command with --resume."""

#: CLI option (argparse dest) -> FinetuneConfig field, for the training settings.
TRAINING_FIELDS = {
    "model": "model", "data": "data", "eval_data": "eval_data", "steps": "steps", "lr": "lr",
    "batch_size": "batch_size", "grad_accum": "grad_accum", "seq_len": "seq_len", "warmup": "warmup_steps",
    "weight_decay": "weight_decay", "seed": "seed", "eval_tokens": "eval_tokens",
    "checkpoint_every": "checkpoint_every", "precision": "precision", "checkpointing": "checkpointing",
    "optimizer": "optimizer",
}
#: CLI option (argparse dest) -> knob of the optimizer's own config (`rankwise.optim`).
OPTIMIZER_OPTIONS = {"proj_rank": "rank", "update_gap": "update_gap", "projector": "projector",
                     "proj_scale": "scale"}


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


def register(sub: Any) -> None:
    # Options default to None so that only the ones given override --config; the defaults shown in
    # --help are FinetuneConfig's.
    p = sub.add_parser("finetune", help="fine-tune a low-rank adapter (LoRA, PiSSA, MiLoRA, CorDA, EVA), all weights "
                       "or sampled layers (LISA), with AdamW or low-rank-projection optimizers",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="bundled name (default smollm2-135m), HF folder, .gguf file or hub id")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--config", metavar="FILE",
                   help="YAML file of settings (a run's config.yaml); options given here override it (default: none)")
    a = p.add_argument_group("adapter")
    # Names written out rather than read from the registry: that would import torch for every --help
    # (a test checks that this list and the registry agree).
    a.add_argument("--method", help="lora (default), pissa, milora, corda, eva, svfit, sorsa, salt, kasa, nola, "
                   "lift, adalora or increlora; knobs of a method's own (target_rank, k, ...) via --config")
    a.add_argument("--rank", type=positive_int, help="adapter rank (default 16)")
    a.add_argument("--alpha", type=_float, help="scaling numerator (default: alpha = rank, scaling 1)")
    a.add_argument("--rslora", action="store_true", default=None,
                   help="scale by alpha/sqrt(rank) (default: alpha/rank)")
    a.add_argument("--dropout", type=_float, help="dropout on the adapter input (default 0)")
    a.add_argument("--targets", help="all-linear (default), comma-separated suffixes, or re:REGEX")
    a.add_argument("--svd", choices=["randomized", "exact"], help="init SVD of pissa (default randomized)")
    a.add_argument("--mode", choices=["ipm", "kpm"],
                   help="corda: train the largest (ipm, default) or smallest (kpm) part")
    a.add_argument("--rho", type=_float, help="eva: a layer may get at most rho x rank components (default 2)")
    a.add_argument("--calib-data", help="corda/eva calibration text (default wiki)")
    a.add_argument("--calib-windows", type=positive_int, help="corda/eva calibration windows (default 32)")
    w = p.add_argument_group("what trains (default: an adapter)")
    w.add_argument("--full", action="store_true", default=None,
                   help="train every weight; the run folder is then a Hugging Face model folder (default: an adapter)")
    w.add_argument("--lisa", action="store_true", default=None,
                   help="train all weights but only a few sampled decoder blocks at a time (LISA; implies --full; "
                   "default: off)")
    w.add_argument("--lisa-layers", type=positive_int, help="LISA: blocks that train at a time (default 2)")
    w.add_argument("--lisa-interval", type=positive_int, help="LISA: steps between samplings (default 20)")
    o = p.add_argument_group("optimizer")
    o.add_argument("--optimizer", help="adamw (default) or lowrank_adamw (gradients projected onto a low-rank "
                   "subspace: a fraction of AdamW's state memory)")
    o.add_argument("--proj-rank", type=positive_int, help="lowrank_adamw: subspace rank (default 64)")
    o.add_argument("--update-gap", type=positive_int, help="lowrank_adamw: steps between subspace updates "
                   "(default 200)")
    o.add_argument("--projector", help="lowrank_adamw: svd (default), randomized, dct or random")
    o.add_argument("--proj-scale", type=_float, help="lowrank_adamw: update scale (default 0.25)")
    t = p.add_argument_group("training")
    t.add_argument("--data", help="training text: its 'calib' split (default tinystories)")
    t.add_argument("--eval-data", help="held-out text ('eval' split); default: --data")
    t.add_argument("--steps", type=positive_int, help="optimizer steps (default 200)")
    t.add_argument("--lr", type=_float, help="peak learning rate (default 2e-4)")
    t.add_argument("--batch-size", type=positive_int, help="windows per micro-batch (default 4)")
    t.add_argument("--grad-accum", type=positive_int, help="micro-batches per step (default 1)")
    t.add_argument("--seq-len", type=positive_int, help="tokens per window (default 256)")
    t.add_argument("--warmup", type=int, help="warm-up steps (default 10)")
    t.add_argument("--weight-decay", type=_float, help="AdamW weight decay (default 0)")
    t.add_argument("--max-grad-norm", type=_float, help="gradient clipping (default 1.0); 0 disables it")
    t.add_argument("--seed", type=int, help="seeds the init, data order and dropout (default 0)")
    t.add_argument("--eval-tokens", type=int, help="held-out tokens scored before/after (default 8192); 0 skips")
    t.add_argument("--checkpoint-every", type=positive_int, help="steps between resumable checkpoints (default 50)")
    t.add_argument("--checkpointing", nargs="?", const="full", choices=["none", "selective", "full"],
                   help="what decoder blocks recompute in the backward pass (activation checkpointing): "
                        "'selective' (default) the cheap ops, ~0.7x the peak memory of 'none' for ~1.1x the "
                        "step time; 'full' (or the bare flag) everything, ~0.5x for ~1.3x")
    t.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: mixed precision, the frozen model's matmuls in bfloat16 (default fp32)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run with the same settings (default: start a new run)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: show them)")
    p.set_defaults(func=run)


def parse_targets(text: str) -> str | list[str]:
    if text == "all-linear" or text.startswith("re:"):
        return text
    return [t.strip() for t in text.split(",") if t.strip()]


def read_config_file(path: str) -> dict[str, Any]:
    """The settings mapping of a YAML config file; one-line errors for a missing or malformed file."""
    from pathlib import Path

    import yaml

    from rankwise.errors import RankwiseError

    file = Path(path)
    if not file.is_file():
        raise RankwiseError(f"config file {path} does not exist; pass a YAML file such as a run's config.yaml")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise RankwiseError(f"config file {path} is not valid YAML{at}; fix it or start from a run's "
                            "config.yaml") from None
    if not isinstance(data, dict):
        raise RankwiseError(f"config file {path} must hold a mapping of settings (model:, adapter:, steps:, ...)")
    return data


def _adapter_settings(args: argparse.Namespace, file_adapter: Any) -> dict[str, Any]:
    """The adapter config: the file's, with the adapter options given on the command line on top.
    A different ``--method`` starts from that method's defaults (other methods' knobs may not apply)."""
    from rankwise.errors import RankwiseError

    if file_adapter is not None and not isinstance(file_adapter, dict):
        raise RankwiseError("'adapter' in the config file must be a mapping such as {method: pissa, rank: 16}")
    settings = dict(file_adapter or {})
    if args.method is not None and settings.get("method") != args.method:
        settings = {}
    calib = dict(settings.get("calibration") or {})
    calib.update({k: v for k, v in {"source": args.calib_data, "windows": args.calib_windows}.items()
                  if v is not None})
    given = {"method": args.method, "rank": args.rank, "alpha": args.alpha, "rslora": args.rslora,
             "dropout": args.dropout, "svd": args.svd, "mode": args.mode, "rho": args.rho, "seed": args.seed,
             "calibration": calib or None}
    settings.update({k: v for k, v in given.items() if v is not None})
    settings.setdefault("method", "lora")
    return settings


def _whole_model_settings(args: argparse.Namespace, settings: dict[str, Any]) -> bool:
    """Fold --full/--lisa and their knobs into ``settings``; True when all weights train (no adapter)."""
    lisa = settings.get("lisa")
    if args.lisa or args.lisa_layers is not None or args.lisa_interval is not None:
        lisa = dict(lisa or {})
        lisa.update({k: v for k, v in {"layers": args.lisa_layers, "interval": args.lisa_interval}.items()
                     if v is not None})
    if lisa is not None:
        settings["lisa"] = lisa
    if args.full:
        settings["full"] = True
    return bool(settings.get("full") or settings.get("lisa") is not None)


def _optimizer_settings(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    """The optimizer name and options: the file's, with the options given here on top. A different
    ``--optimizer`` starts from that optimizer's defaults (another optimizer's knobs may not apply)."""
    options = dict(settings.get("optimizer_options") or {})
    if args.optimizer is not None and settings.get("optimizer", "adamw") != args.optimizer:
        options = {}
    options.update({knob: getattr(args, dest) for dest, knob in OPTIMIZER_OPTIONS.items()
                    if getattr(args, dest) is not None})
    if options:
        settings["optimizer_options"] = options


def build_config(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from rankwise.adapters.config import make_config
    from rankwise.adapters.finetune import FinetuneConfig
    from rankwise.errors import RankwiseError

    settings = read_config_file(args.config) if args.config else {}
    file_adapter = settings.pop("adapter", None)
    if _whole_model_settings(args, settings):
        given = [f"--{k.replace('_', '-')}" for k in ("method", "rank", "alpha", "rslora", "dropout", "targets", "svd",
                                                      "mode", "rho", "calib_data", "calib_windows")
                 if getattr(args, k) is not None]
        if given:
            raise RankwiseError(f"{', '.join(given)} configure an adapter, but --full/--lisa train all weights; "
                                "drop one or the other")
        adapter = None
    else:
        adapter_settings = _adapter_settings(args, file_adapter)
        adapter = make_config(adapter_settings.pop("method"), **adapter_settings)
    _optimizer_settings(args, settings)
    settings.update({field: getattr(args, dest) for dest, field in TRAINING_FIELDS.items()
                     if getattr(args, dest) is not None})
    if args.targets is not None:
        settings["targets"] = parse_targets(args.targets)
    if args.max_grad_norm is not None:
        settings["max_grad_norm"] = args.max_grad_norm or None
    try:
        return FinetuneConfig(adapter=adapter, **settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise RankwiseError(f"invalid setting {where}: {message}" if where else message) from None
    except TypeError as exc:  # a non-string key in the YAML mapping
        raise RankwiseError(f"invalid config file {args.config}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from rankwise.adapters.finetune import finetune

    config = build_config(args)
    report = finetune(config, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    what = (f"{report['method']} (rank {config.adapter.rank})" if config.adapter is not None
            else f"{report['trainable']} fine-tuning")
    print(f"trained         {what}, {report['steps']} steps, {report['tokens_trained']:,} tokens")
    print(f"trainable       {report['trainable_parameters']:,} of {report['total_parameters']:,} parameters")
    print(f"optimizer       {report['optimizer']}, state {report['optimizer_state_bytes'] / 2**20:,.1f} MiB")
    print(f"train loss      {report['loss_first']:.4f} -> {report['loss_last']:.4f}")
    if report["perplexity_before"] is not None:
        print(f"perplexity      {report['perplexity_before']:.3f} -> {report['perplexity_after']:.3f} "
              f"({config.eval_data or config.data} eval)")
    print(f"speed           {report['tokens_per_s']:.0f} tokens/s, peak RSS {report['peak_rss_mb']:.0f} MB")
    print(f"wrote {args.out}")
    return 0
