"""`rankwise analyze MODEL`: spectral diagnostics of weights, weight deltas and gradients."""

from __future__ import annotations

import argparse
from typing import Any

from rankwise.cli.common import positive_int, regex, seq_len

EXAMPLES = """examples:
  rankwise analyze smollm2-135m --out report/
  rankwise analyze out/finetuned --against smollm2-135m --out report/
  rankwise analyze smollm2-135m --gradients --data wiki --windows 16 --out report/
  rankwise analyze smollm2-135m --fast --include 'mlp' --json

outputs: report/index.html (self-contained, open it in a browser), report/summary.json,
report/matrices.csv (+ delta.csv, gradients.csv), report/spectra.safetensors (singular values)."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got '{text}'") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser("analyze", help="spectra, α, effective ranks, deltas and gradients, with an HTML report",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="bundled name (smollm2-135m), HF folder, .gguf file or hub id")
    p.add_argument("--out", help="report folder to write (index.html, summary.json, matrices.csv, ...; "
                   "default: none, print only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder (default: refuse)")
    p.add_argument("--against", metavar="BASE", help="base model: also analyse ΔW = W − W_base (default: none)")
    p.add_argument("--gradients", action="store_true",
                   help="also analyse gradients of the LM loss on --data (default: off)")
    p.add_argument("--data", default="wiki",
                   help="gradient data: wiki, c4, tinystories, code, a .txt/.jsonl file (default wiki)")
    p.add_argument("--windows", type=positive_int, default=16, help="token windows for --gradients (default 16)")
    p.add_argument("--seq-len", type=seq_len, default=256, help="window length for --gradients (default 256)")
    p.add_argument("--fast", action="store_true", help="randomized top-k singular values instead of all (default: off)")
    p.add_argument("--fast-rank", type=positive_int, default=64, help="k for --fast (default 64)")
    p.add_argument("--include", metavar="REGEX", type=regex,
                   help="only tensors whose name matches this regex (default: all)")
    p.add_argument("--metrics", metavar="A,B", help="comma-separated metrics (default all: norms, stable_rank, "
                   "effective_rank, energy_ranks, alpha, farms_alpha); FARMS is about half the time")
    p.add_argument("--welore-ratio", type=_fraction, default=0.5,
                   help="parameter fraction the WeLore ranks remove in total (default 0.5)")
    p.add_argument("--workers", type=positive_int, help="matrices analysed in parallel (default: torch threads)")
    p.add_argument("--json", action="store_true",
                   help="print summary.json to stdout instead of the table (default: table)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: show one)")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> Any:
    from rankwise.analysis.config import AnalyzeConfig

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics is not None else None
    if metrics == []:
        from rankwise.errors import RankwiseError

        raise RankwiseError(f"--metrics '{args.metrics}' names no metric; give a comma-separated list such as "
                            "stable_rank,alpha, or leave --metrics out for all")
    return AnalyzeConfig(metrics=metrics, include=args.include, fast=args.fast, fast_rank=args.fast_rank,
                         workers=args.workers, welore_ratio=args.welore_ratio, gradients=args.gradients, data=args.data,
                         windows=args.windows, seq_len=args.seq_len)


def _check_inputs(args: argparse.Namespace) -> None:
    """What can fail without reading a weight fails here, before the long work."""
    from rankwise.io.atomic import check_output_folder
    from rankwise.io.loading import check_seq_len, model_config

    if args.out:
        check_output_folder(args.out, args.overwrite)
    if args.gradients:
        from rankwise.data.sources import documents

        documents(args.data, "calib")
    config = model_config(args.model)
    if args.against is not None:
        model_config(args.against)
    if args.gradients:
        check_seq_len(config, args.seq_len)


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_summary(report: Any) -> None:
    from rankwise.cli.common import print_table

    rows = [[s["type"], s["shape"], str(s["count"]), _num(s["effective_rank"], 1), _num(s["stable_rank"], 1),
             _num(s["rank_90"], 0), _num(s["welore_rank"], 0), _num(s["alpha_mean"]),
             f"{_num(s['alpha_min'])}..{_num(s['alpha_max'])}", _num(s["farms_alpha"]),
             "-" if s["alpha_in_band"] is None else f"{s['alpha_in_band']:.0%}"] for s in report.summary()]
    print_table(rows, ["matrix type", "shape", "n", "eff.rank", "stable", "rank90", "welore", "alpha",
                       "alpha range", "farms", "in 2-6"])
    if report.delta_rows:
        print()
        print_table([[r["name"], _num(r["delta_effective_rank"], 1), _num(r["overlap"], 3), str(r["intruders"])]
                     for r in report.delta_rows[:12]], ["delta (first 12)", "eff.rank", "overlap", "intruders"])
    if report.gradient_rows:
        print()
        print_table([[r["name"], f"{r['grad_nuclear_norm']:.3g}", _num(r["grad_effective_rank"], 1)]
                     for r in report.gradient_rows[:12]], ["gradient (first 12)", "nuclear", "eff.rank"])


def run(args: argparse.Namespace) -> int:
    from rankwise.analysis.analyze import analyze

    config = _config(args)
    _check_inputs(args)
    report = analyze(args.model, config, against=args.against, progress=not args.no_progress)
    if args.json:
        print(report.to_json(), end="")
    else:
        print_summary(report)
        print(f"\n{len(report.rows)} matrices in {report.meta['seconds']:.1f} s; "
              f"WeLore τ = {_num(report.meta.get('welore_tau'), 4)}")
    if args.out:
        report.save(args.out, overwrite=args.overwrite)
        if not args.json:
            print(f"wrote {args.out}/index.html, summary.json, matrices.csv")
    return 0
