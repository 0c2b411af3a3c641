"""Adapt SmolLM2-135M to tinystories with every registered adapter method, measured in one run.

Same steps, seed, data order and learning rate for every method, at comparable trainable-parameter
budgets (LoRA r=16 on all 7 projection types; methods that cannot reach that budget, such as SVFit's
singular values or NOLA's coefficients, train what they train, and the counts are printed). Each
method runs in its own subprocess so that its peak RSS is its own. Columns: trainable parameters
(at the end: AdaLoRA's after pruning, IncreLoRA's after growth), optimizer-state bytes, peak RSS,
median step time, held-out tinystories perplexity (what it learned) and wiki eval perplexity (what it
forgot), next to the base model's.

    PYTHONPATH=src python bench/adapt_domain.py [--steps 40] [--jobs 2] [--batch-size 2] [--seq-len 256]
        [--eval-tokens 4096]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RANK = 16


def method_settings(method: str, steps: int, layers: int) -> dict[str, Any]:
    """The adapter config of ``method`` at a budget comparable to LoRA r=16."""
    if method == "svfit":
        return {"rank": 128}  # r singular values per layer: the most SVFit trains below k_proj's 192
    if method == "salt":
        return {"rank": RANK, "lora_rank": RANK}
    if method == "nola":
        return {"rank": RANK, "k": 1024}
    if method == "adalora":  # 1.5 r at the start, pruned to r on average
        return {"rank": RANK * 3 // 2, "target_rank": RANK, "interval": max(1, steps // 10)}
    if method == "increlora":  # r/4 at the start, grown to r on average over the growth window
        interval = max(1, steps // 10)
        growths = max(1, math.ceil((steps - round(0.1 * steps) - round(0.2 * steps)) / interval))
        per_growth = math.ceil((RANK - RANK // 4) * layers / growths)
        return {"rank": RANK // 4, "target_rank": RANK, "interval": interval, "grow_layers": per_growth}
    if method in ("corda", "eva"):
        return {"rank": RANK, "calibration": {"windows": 8}}
    return {"rank": RANK}


def run_one(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``method`` (or measure the base model for ``base``) in this process; returns its row."""
    import torch

    import rankwise as rw
    from rankwise.adapters.finetune import AdapterTrainable, FinetuneConfig
    from rankwise.train import train

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok = rw.load_model("smollm2-135m")
    wiki = rw.data.windows("wiki", "eval", args.seq_len, tokens=args.eval_tokens, tokenizer=tok)
    stories = rw.data.windows("tinystories", "eval", args.seq_len, tokens=args.eval_tokens, tokenizer=tok)
    if method == "base":
        return {"method": "base", "tinystories_ppl": rw.eval.perplexity(model, stories, progress=False).perplexity,
                "wiki_ppl": rw.eval.perplexity(model, wiki, progress=False).perplexity}
    layers = len(rw.modules.select_targets(model, "all-linear"))
    adapter = {"method": method, **method_settings(method, args.steps, layers)}
    config = FinetuneConfig.model_validate({
        "adapter": adapter, "steps": args.steps, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "lr": args.lr, "warmup_steps": max(1, args.steps // 10), "eval_tokens": args.eval_tokens,
        "checkpoint_every": args.steps + 1, "seed": 0})
    marks: list[float] = []

    class Timed(AdapterTrainable):
        def before_step(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
            marks.append(time.perf_counter())
            super().before_step(step, model, optimizer)

    trainable = Timed(config.adapter, config.targets, steps=config.steps)  # type: ignore[arg-type]
    train_windows = rw.data.windows("tinystories", "calib", args.seq_len, tokenizer=tok)
    with tempfile.TemporaryDirectory() as tmp:
        report = train(config, trainable, Path(tmp) / "run", model=model, tokenizer=tok,
                       train_windows=train_windows, eval_windows=stories, progress=False)
    steps = [b - a for a, b in itertools.pairwise(marks)]
    return {
        "method": method, "settings": adapter, "trainable": report["trainable_parameters"],
        "optimizer_state_bytes": report["optimizer_state_bytes"], "peak_rss_mb": report["peak_rss_mb"],
        "median_step_s": statistics.median(steps) if steps else float("nan"),
        "tinystories_ppl": report["perplexity_after"], "wiki_ppl": rw.eval.perplexity(model, wiki, progress=False)
        .perplexity, "loss_first": report["loss_first"], "loss_last": report["loss_last"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (1 keeps runs comparable on "
                        "a shared machine)")
    parser.add_argument("--jobs", type=int, default=2, help="methods trained at once, each in its own process "
                        "(default 2: one per core with --threads 1)")
    parser.add_argument("--methods", default="", help="comma-separated subset (default: every registered method)")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    import rankwise as rw

    methods = args.methods.split(",") if args.methods else rw.adapters.method_names()

    def run(method: str) -> dict[str, Any] | None:
        cmd = [sys.executable, __file__, "--one", method, "--steps", str(args.steps), "--batch-size",
               str(args.batch_size), "--seq-len", str(args.seq_len), "--lr", str(args.lr), "--eval-tokens",
               str(args.eval_tokens), "--threads", str(args.threads)]
        started = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"{method}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
        print(f"{method}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return row

    # --jobs runs at once, each on --threads threads: with jobs x threads = cores every run sees the same
    # machine, so step times stay comparable, and the table takes half the time on 2 cores.
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = [r for r in pool.map(run, ["base", *methods]) if r is not None]
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = next((r for r in rows if r["method"] == "base"), None)
    print(f"SmolLM2-135M on tinystories: {args.steps} steps of {args.batch_size} x {args.seq_len} tokens, "
          f"lr {args.lr}, seed 0, {args.jobs} run(s) at once on {args.threads} thread(s) each; "
          f"perplexity on {args.eval_tokens} held-out tokens each")
    print("| method | settings | trainable | optimizer state | peak RSS | median step | tinystories ppl | wiki ppl |")
    print("|---|---|---|---|---|---|---|---|")
    if base is not None:
        print(f"| base model | | 0 | 0 | | | {base['tinystories_ppl']:.2f} | {base['wiki_ppl']:.2f} |")
    for r in rows:
        if r["method"] == "base":
            continue
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items() if k not in ("method", "calibration"))
        print(f"| {r['method']} | {settings} | {r['trainable']:,} | {r['optimizer_state_bytes'] / 2**20:.1f} MiB "
              f"| {r['peak_rss_mb']:.0f} MiB | {r['median_step_s']:.2f} s | {r['tinystories_ppl']:.2f} "
              f"| {r['wiki_ppl']:.2f} |")


if __name__ == "__main__":
    main()
