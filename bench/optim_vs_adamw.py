"""Full fine-tuning of SmolLM2-135M: rankwise's LowRankAdamW (each projector) vs torch AdamW, galore-torch
and apollo-torch, measured in one run.

Every row trains all weights on the same `wiki` calib windows (batch × seq tokens a step, same seed and
data order) with the same LR schedule (linear warm-up over 10 % of the steps, then cosine to 10 %), at
the same rank, update gap and scale for every low-rank optimizer. Each row runs in its own subprocess so
that its peak RSS is its own. Columns: optimizer-state bytes (`rankwise.optim.state_bytes`, projectors
included) and their ratio to AdamW's; peak RSS; median training step (forward + backward + optimizer
step), the first step (it allocates every buffer and the optimizer state, for AdamW as well, and
computes the first subspaces) and the slowest later step, where the subspaces are recomputed, with its
ratio to the median; the median optimizer step alone; train loss over the last steps; held-out wiki
eval loss after training. Then each row's median step and held-out loss against AdamW's.

The peers are bench-only, never a dependency: install them where they cannot pull another torch, e.g.

    python3 -m venv /work/bench-venv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /work/bench-venv/lib/python3.11/site-packages/main.pth
    /work/bench-venv/bin/pip install --no-deps galore-torch==1.0 apollo-torch==1.0.3 bitsandbytes

A peer row runs under /work/bench-venv's python when that exists (else this one) and is skipped with the
reason printed when its package is missing. The peers project the decoder blocks' matrices only (their
READMEs' recipe), rankwise's rows every 2-D weight including the (tied) embedding; the ``_blocks`` rows
run rankwise with the peers' scope, for a comparison at the same rank and the same projected set.

    PYTHONPATH=src .venv/bin/python bench/optim_vs_adamw.py [--steps 100] [--gap 50] [--rows adamw,rankwise_dct]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_VENV = Path(os.environ.get("RANKWISE_BENCH_VENV", "/work/bench-venv"))
ROWS = ["adamw", "galore", "apollo", "rankwise_svd", "rankwise_randomized", "rankwise_dct", "rankwise_random",
        "rankwise_svd_blocks", "rankwise_dct_blocks", "rankwise_random_blocks", "lisa"]
PEER_ROWS = {"galore": "galore_torch", "apollo": "apollo_torch"}


class Skip(Exception):
    """A row that cannot run here; the message says why."""


def _block_linear_weights(model: Any) -> tuple[list[Any], list[Any]]:
    """(2-D weights inside the decoder blocks, every other parameter): what the peers' READMEs project."""
    inside, rest = [], []
    for name, p in model.named_parameters():
        (inside if p.ndim == 2 and ".layers." in f".{name}" else rest).append(p)
    return inside, rest


def _optimizer(row: str, model: Any, args: argparse.Namespace) -> tuple[Any, Callable[[int], None]]:
    """(optimizer, hook called before every step) for ``row``."""
    import torch

    def no_hook(step: int) -> None:
        return None

    if row == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=args.lr), no_hook
    if row.startswith("rankwise_"):
        from rankwise.optim import LowRankAdamW

        projector = row.removeprefix("rankwise_").removesuffix("_blocks")
        params: Any = model.parameters()
        if row.endswith("_blocks"):  # the peers' scope: embedding, head and norms keep full AdamW state
            inside, rest = _block_linear_weights(model)
            params = [{"params": rest, "lowrank": False}, {"params": inside}]
        opt = LowRankAdamW(params, lr=args.lr, rank=args.rank, update_gap=args.gap, projector=projector,
                           scale=args.scale)
        return opt, no_hook
    if row in PEER_ROWS:
        try:
            peer = __import__(PEER_ROWS[row])
        except ImportError as e:
            raise Skip(f"{PEER_ROWS[row]} is not installed ({e}); see this script's docstring") from None
        inside, rest = _block_linear_weights(model)
        low = {"params": inside, "rank": args.rank, "update_proj_gap": args.gap, "scale": args.scale,
               "proj_type": "std"}
        if row == "galore":
            return peer.GaLoreAdamW([{"params": rest}, low], lr=args.lr), no_hook
        low.update(proj="random", scale_type="channel")
        return peer.APOLLOAdamW([{"params": rest}, low], lr=args.lr), no_hook
    if row == "lisa":
        try:  # LISA lives in the training package; this row is the hook for it
            from rankwise.train.lisa import LisaConfig, LisaTrainable
        except ImportError as e:
            raise Skip(f"LISA is not available ({e})") from None
        lisa = LisaTrainable(LisaConfig(layers=2, interval=args.gap), seed=0)
        lisa.check(model)
        lisa.prepare(model, torch.empty(0), False)
        opt = torch.optim.AdamW(list(lisa.parameters(model).values()), lr=args.lr)
        return opt, lambda step: lisa.before_step(step, model, opt)
    raise Skip(f"unknown row {row}")


def _lr(step: int, total: int, peak: float) -> float:
    warmup = max(1, total // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def measure(row: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import rankwise as rw
    from rankwise.optim import state_bytes

    torch.manual_seed(0)
    model, _ = rw.load_model("smollm2-135m")
    model.train()
    train = rw.data.windows("wiki", split="calib", seq_len=args.seq, n=args.steps * args.batch, seed=0)
    held_out = rw.data.windows("wiki", split="eval", seq_len=args.seq, n=args.eval_windows)
    opt, before_step = _optimizer(row, model, args)
    step_s, opt_s, losses = [], [], []
    for step in range(args.steps):
        batch = train[step * args.batch : (step + 1) * args.batch]
        t0 = time.perf_counter()
        before_step(step)
        for group in opt.param_groups:
            group["lr"] = _lr(step, args.steps, args.lr)
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        step_s.append(t2 - t0)
        opt_s.append(t2 - t1)
        losses.append(float(loss.detach()))
        if args.verbose:
            print(f"{row} step {step}: loss {losses[-1]:.4f} {t2 - t0:.2f} s (opt {t2 - t1:.2f} s)", file=sys.stderr)
    model.eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for i in range(0, held_out.shape[0], args.batch):
            chunk = held_out[i : i + args.batch]
            total += float(model(input_ids=chunk, labels=chunk, use_cache=False).loss) * chunk.numel()
            count += chunk.numel()
    tail = max(1, args.steps // 10)
    return {"state_bytes": state_bytes(opt), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "median_step_s": statistics.median(step_s), "slowest_step_s": max(step_s), "first_step_s": step_s[0],
            # after the first step (which allocates every buffer and state, for AdamW too): what a
            # subspace refresh costs in steady state
            "slowest_later_s": max(step_s[1:], default=float("nan")),
            "slowest_later_at": max(range(1, len(step_s)), key=step_s.__getitem__, default=0),
            "median_opt_s": statistics.median(opt_s), "first_opt_s": opt_s[0],
            "train_loss": statistics.fmean(losses[-tail:]), "eval_loss": total / count,
            "threads": torch.get_num_threads()}


def _python_for(row: str) -> str:
    peer_python = BENCH_VENV / "bin" / "python"
    return str(peer_python) if row in PEER_ROWS and peer_python.exists() else sys.executable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--gap", type=int, default=50, help="projector update gap (and LISA's sampling interval)")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of: " + ", ".join(ROWS))
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--which", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.which:
        try:
            print(json.dumps(measure(args.which, args)))
        except Skip as e:
            print(json.dumps({"skipped": str(e)}))
        return
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    results: dict[str, dict[str, Any]] = {}
    for row in rows:
        cmd = [_python_for(row), __file__, "--which", row, *sys.argv[1:]]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if args.verbose else subprocess.PIPE,
                              text=True, env=env)
        if done.returncode != 0:
            # The last line naming an error, not the peers' import-time warnings (-9: killed, e.g. out of memory).
            errors = [line for line in (done.stderr or "").splitlines() if "Error" in line.split(":")[0]]
            results[row] = {"skipped": f"failed with exit code {done.returncode}"
                                       + (f": {errors[-1].strip()}" if errors else "")}
        else:
            results[row] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {row}: {results[row]}", file=sys.stderr)
    _print_table(results, args)


def _print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    base = results.get("adamw", {}).get("state_bytes")
    ran = [r for r in results.values() if "skipped" not in r]
    print(f"Full fine-tuning of SmolLM2-135M on wiki calib windows: {args.steps} steps of {args.batch} x {args.seq} "
          f"tokens, lr {args.lr} (warm-up + cosine), rank {args.rank}, update gap {args.gap}, scale {args.scale}; "
          f"held-out loss on {args.eval_windows} wiki eval windows; {ran[0]['threads'] if ran else '?'} threads")
    head = (f"{'row':<22}{'state MB':>10}{'vs AdamW':>10}{'peak RSS MB':>13}{'median step s':>15}"
            f"{'first step s':>14}{'slowest later s (step)':>24}{'/median':>9}{'median opt s':>14}"
            f"{'train loss':>12}{'eval loss':>11}")
    print(head)
    print("-" * len(head))
    for row, r in results.items():
        if "skipped" in r:
            print(f"{row:<22}skipped: {r['skipped']}")
            continue
        ratio = f"{r['state_bytes'] / base:.3f}x" if base else "-"
        print(f"{row:<22}{r['state_bytes'] / 2**20:>10.1f}{ratio:>10}{r['peak_rss_mb']:>13.0f}"
              f"{r['median_step_s']:>15.2f}{r['first_step_s']:>14.2f}"
              f"{r['slowest_later_s']:>18.2f} ({r['slowest_later_at']:>3})"
              f"{r['slowest_later_s'] / r['median_step_s']:>8.2f}x{r['median_opt_s']:>14.3f}"
              f"{r['train_loss']:>12.4f}{r['eval_loss']:>11.4f}")
    adamw = results.get("adamw", {})
    if "eval_loss" in adamw:
        print("\nagainst AdamW: median step ratio, held-out loss difference")
        for row, r in results.items():
            if row != "adamw" and "skipped" not in r:
                print(f"  {row:<22}{r['median_step_s'] / adamw['median_step_s']:>6.2f}x"
                      f"{100 * (r['eval_loss'] / adamw['eval_loss'] - 1):>+8.2f} %")


if __name__ == "__main__":
    main()
