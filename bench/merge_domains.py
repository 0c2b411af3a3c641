"""Every merge method on two real domain fine-tunes of SmolLM2-135M: how much of each domain survives.

Protocol (issue 13):

1. Two LoRA fine-tunes (rank 8, all linear layers) of SmolLM2-135M, made with rankwise's own
   ``rankwise.adapters.finetune``: one on ``tinystories``, one on ``code`` (their ``calib`` splits;
   same seed, lr, ``--steps`` steps of batch 2 x 128 tokens).
2. Every registered merge method (``rankwise.merge.METHODS``) merges the two as whole models
   (``dtype: float32``, the adapters applied to ``base_model: smollm2-135m`` tensor by tensor):
   ``linear`` (mean, weights 0.5/0.5), ``task_arithmetic`` and ``dare_linear`` (sum of the task
   vectors, weights 1), ``ties``/``dare_ties``/``knots`` (weights 1, normalised, density 0.5),
   ``tsv``/``iso_c``/``iso_cts`` (weights 1, lambda 1), ``slerp`` (t = 0.5 between the two fine-tunes,
   written ``smollm2-135m+ADAPTER`` as mergekit does), ``regmean`` (the adapters merged into dense
   folders first, since it calibrates full models; Grams on ``--calib-windows`` wiki windows of 128
   tokens, alpha 0.9). Where ``output: adapter`` is supported (linear, cat, ties, dare_ties, knots, tsv)
   the adapters are also merged into one adapter, without a dense update.
3. For every merge, the two fine-tunes and the base: held-out perplexity on the ``eval`` split of each
   domain (``--eval-tokens`` tokens in windows of 128). A merge's score is the mean over the two
   domains of (ppl_base - ppl_merge) / (ppl_base - ppl_finetune of that domain): the share of the
   base-to-fine-tune gap the merge closes (1 = as good as each specialist on its own domain).
4. One table sorted by score; the last line names the winner and says whether the spectral merges
   (tsv, iso_c, iso_cts) and the data-aware one (regmean) beat task_arithmetic and ties here.

A method that cannot run on this input is skipped with the reason printed.

    .venv/bin/python bench/merge_domains.py                               # 60 steps, 4096 eval tokens
    .venv/bin/python bench/merge_domains.py --steps 4 --eval-tokens 512 --methods linear,ties,tsv
    .venv/bin/python bench/merge_domains.py --work runs/merge-domains     # keep (and reuse) the fine-tunes
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import rankwise as rw
from rankwise.adapters import merge_and_unwrap
from rankwise.adapters.finetune import FinetuneConfig, finetune
from rankwise.io.saving import save_model
from rankwise.merge.adapter_output import ADAPTER_METHODS

BASE = "smollm2-135m"
DOMAINS = ("tinystories", "code")
SEQ_LEN = 128
SPECTRAL = ("tsv", "iso_c", "iso_cts")
DATA_AWARE = ("regmean",)
REFERENCES = ("task_arithmetic", "ties")


def make_finetune(domain: str, args: argparse.Namespace, work: Path) -> Path:
    """A LoRA r=8 fine-tune on ``domain``; reused when its folder is already complete."""
    out = work / f"ft-{domain}-s{args.steps}-lr{args.lr:g}"
    if (out / "adapter.safetensors").is_file() and (out / "report.json").is_file():
        print(f"reusing fine-tune {out}")
        return out
    config = FinetuneConfig.model_validate({
        "model": BASE, "adapter": {"method": "lora", "rank": 8}, "data": domain, "steps": args.steps,
        "seq_len": SEQ_LEN, "batch_size": 2, "lr": args.lr, "warmup_steps": max(1, args.steps // 10),
        "eval_tokens": 0, "checkpoint_every": max(args.steps, 1), "seed": 0,
    })
    t0 = time.perf_counter()
    finetune(config, out, overwrite=True, progress=False)
    print(f"fine-tuned {domain}: {args.steps} steps in {time.perf_counter() - t0:.0f} s -> {out}")
    return out


def dense(adapter: Path, out: Path) -> Path:
    """The adapter folded into the base, as an HF folder (regmean calibrates full models)."""
    if (out / "config.json").is_file():
        return out
    model, tok = rw.load_model(BASE)
    merge_and_unwrap(rw.adapters.load_adapter(model, adapter))
    save_model(model, tok, out, overwrite=True)
    del model
    gc.collect()
    return out


def merge_config(method: str, fts: dict[str, Path], dense_fts: dict[str, Path], calib_windows: int,
                 output: str) -> dict[str, Any]:
    """The mergekit-style config of ``method`` on the two fine-tunes."""
    a, b = (str(fts[d]) for d in DOMAINS)
    cfg: dict[str, Any] = {"merge_method": method, "base_model": BASE, "output": output, "seed": 0}
    if output == "model":
        cfg["dtype"] = "float32"

    def both(**params: Any) -> list[dict[str, Any]]:
        return [{"model": a, "parameters": dict(params)}, {"model": b, "parameters": dict(params)}]

    if method in ("linear", "cat"):
        cfg["models"] = both(weight=0.5 if method == "linear" else 1.0)
    elif method in ("task_arithmetic", "tsv", "iso_c", "iso_cts"):
        cfg["models"] = both(weight=1.0)
    elif method in ("dare_linear", "ties", "dare_ties", "knots"):
        cfg["models"] = both(weight=1.0, density=0.5)
    elif method == "slerp":
        cfg["base_model"] = f"{BASE}+{a}"
        cfg["models"] = [{"model": f"{BASE}+{b}"}]
        cfg["parameters"] = {"t": 0.5}
    elif method == "regmean":
        cfg["models"] = [{"model": str(dense_fts[d]), "parameters": {"weight": 1.0}} for d in DOMAINS]
        cfg.update(calib_data="wiki", calib_windows=calib_windows, calib_seq_len=SEQ_LEN)
    else:
        raise NotImplementedError(f"no settings for the merge method '{method}' in this benchmark")
    return cfg


def perplexities(load: Any, evals: dict[str, torch.Tensor]) -> dict[str, float]:
    model = load()
    with torch.no_grad():
        out = {d: rw.eval.perplexity(model, w, progress=False).perplexity for d, w in evals.items()}
    del model
    gc.collect()
    return out


def base_model() -> torch.nn.Module:
    return rw.load_model(BASE)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="fine-tune steps per domain (default 60)")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tune peak lr (default 1e-3)")
    p.add_argument("--eval-tokens", type=int, default=4096, help="held-out tokens per domain (default 4096)")
    p.add_argument("--calib-windows", type=int, default=16, help="regmean calibration windows (default 16)")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of the merge methods (and 'cat'); default: all")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for fine-tunes and merges (default: a temp dir); finished fine-tunes are reused")
    args = p.parse_args()

    registered = sorted(rw.merge.METHODS.names())
    known = [*registered, *[m for m in ADAPTER_METHODS if m not in registered]]
    wanted = known if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in known]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {known}")

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="merge-domains-")
        work = Path(tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    print(f"settings: steps={args.steps} lr={args.lr:g} eval_tokens={args.eval_tokens} seq_len={SEQ_LEN} "
          f"methods={','.join(wanted)} work={work}")

    try:
        fts = {d: make_finetune(d, args, work) for d in DOMAINS}
        evals = {d: rw.data.windows(d, split="eval", seq_len=SEQ_LEN, tokens=args.eval_tokens) for d in DOMAINS}
        rows: list[tuple[str, dict[str, float], float]] = []
        ppl_base = perplexities(base_model, evals)
        ppl_ft = {d: perplexities(lambda d=d: rw.adapters.load_adapter(base_model(), fts[d]), evals)
                  for d in DOMAINS}

        def score(ppl: dict[str, float]) -> float:
            return sum((ppl_base[d] - ppl[d]) / (ppl_base[d] - ppl_ft[d][d]) for d in DOMAINS) / len(DOMAINS)

        dense_fts: dict[str, Path] = {}
        jobs = [(m, "model") for m in wanted if m in registered]
        jobs += [(m, "adapter") for m in wanted if m in ADAPTER_METHODS]
        for method, output in jobs:
            label = f"{method} ({output})"
            out = work / "merges" / f"{method}-{output}"
            try:
                if method == "regmean" and not dense_fts:
                    dense_fts = {d: dense(fts[d], work / f"dense-{d}-s{args.steps}-lr{args.lr:g}") for d in DOMAINS}
                cfg = merge_config(method, fts, dense_fts, args.calib_windows, output)
                t0 = time.perf_counter()
                rw.merge.run(cfg, out, overwrite=True, progress=False)
                took = time.perf_counter() - t0
            except (rw.RankwiseError, NotImplementedError) as exc:
                print(f"skipped {label}: {exc}")
                continue
            if output == "model":
                ppl = perplexities(lambda out=out: rw.load_model(out)[0], evals)
            else:
                ppl = perplexities(lambda out=out: rw.adapters.load_adapter(base_model(), out), evals)
            rows.append((label, ppl, score(ppl)))
            print(f"{label}: merged in {took:.0f} s; " + ", ".join(f"{d} {v:.3f}" for d, v in ppl.items())
                  + f"; score {rows[-1][2]:.3f}")
            shutil.rmtree(out, ignore_errors=True)  # 0.5 GB per fp32 model; the numbers are what we keep

        print()
        head = "| model | " + " | ".join(f"{d} ppl" for d in DOMAINS) + " | mean normalised score |"
        print(head)
        print("|" + "---|" * (len(DOMAINS) + 2))
        print(f"| base {BASE} | " + " | ".join(f"{ppl_base[d]:.3f}" for d in DOMAINS) + " | 0 |")
        for d in DOMAINS:
            print(f"| LoRA r=8 fine-tune on {d} | " + " | ".join(f"{ppl_ft[d][e]:.3f}" for e in DOMAINS)
                  + f" | {score(ppl_ft[d]):.3f} |")
        rows.sort(key=lambda r: r[2], reverse=True)
        for label, ppl, s in rows:
            print(f"| {label} | " + " | ".join(f"{ppl[d]:.3f}" for d in DOMAINS) + f" | {s:.3f} |")
        print()
        if not rows:
            print("no merge ran")
            return
        print(verdict(rows))
    finally:
        if tmp is not None:
            tmp.cleanup()


def verdict(rows: list[tuple[str, dict[str, float], float]]) -> str:
    """The winner, and each spectral / data-aware merge against task_arithmetic and ties (best output form)."""
    best: dict[str, float] = {}
    for label, _, s in rows:
        method = label.split(" ")[0]
        best[method] = max(best.get(method, float("-inf")), s)
    winner = rows[0]
    parts = [f"winner: {winner[0]} (score {winner[2]:.3f})."]
    refs = {m: best[m] for m in REFERENCES if m in best}
    ref_text = " and ".join(f"{m} {v:.3f}" for m, v in refs.items()) or "(task_arithmetic/ties not run)"
    for family, members in (("spectral", SPECTRAL), ("data-aware", DATA_AWARE)):
        ran = [m for m in members if m in best]
        if not ran:
            parts.append(f"{family}: not run.")
            continue
        if not refs:
            parts.append(f"{family}: " + ", ".join(f"{m} {best[m]:.3f}" for m in ran) + f"; {ref_text}.")
            continue
        verdicts = []
        for m in ran:
            beaten = [r for r in refs if best[m] > refs[r]]
            what = ("beats both" if len(beaten) == len(refs) else f"beats only {beaten[0]}" if beaten
                    else "beats neither")
            verdicts.append(f"{m} {best[m]:.3f} {what}")
        parts.append(f"{family}: " + "; ".join(verdicts) + f" (vs {ref_text}).")
    return " ".join(parts)


if __name__ == "__main__":
    main()
