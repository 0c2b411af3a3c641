"""LoRA r=16 training step on SmolLM2-135M, rankwise vs PEFT, measured in one run.

All 7 projection types (q/k/v/o/gate/up/down), batch 4 × 256 tokens, AdamW; the median step time
of N steps after warm-up, the trainable-parameter count and the peak RSS of each configuration.
Each configuration runs in its own subprocess so that peak RSS is its own. rankwise runs as
`rankwise finetune` does by default (selective activation checkpointing), with each other
``--checkpointing`` mode and with ``--precision bf16``; PEFT runs with its defaults (``labels=`` loss),
with transformers' gradient checkpointing, and under ``torch.autocast(bfloat16)``, which is what
transformers' Trainer does with ``bf16=True``. Each rankwise row is compared with the PEFT row
that does the same thing.

    PYTHONPATH=src python bench/adapt_step_vs_peft.py [--steps 10] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

# (label, tool, checkpointing, precision, the PEFT row it is compared with)
SIDES = {
    "rankwise (default)": ("rankwise", "selective", "fp32", "PEFT"),
    "rankwise --checkpointing none": ("rankwise", "none", "fp32", "PEFT"),
    "PEFT": ("peft", "none", "fp32", ""),
    "rankwise --checkpointing full": ("rankwise", "full", "fp32", "PEFT + gradient checkpointing"),
    "PEFT + gradient checkpointing": ("peft", "full", "fp32", ""),
    "rankwise --precision bf16": ("rankwise", "selective", "bf16", "PEFT under bf16 autocast"),
    "PEFT under bf16 autocast": ("peft", "none", "bf16", ""),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(which: str, steps: int, warmup: int, batch: int, seq: int) -> dict[str, float]:
    tool, checkpointing, precision, _ = SIDES[which]
    import torch

    import rankwise as rw

    torch.manual_seed(0)
    model, _ = rw.load_model("smollm2-135m")
    data = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    if tool == "rankwise":
        from rankwise.train import causal_lm_loss

        rw.adapt(model, rw.adapters.LoRA(rank=16, alpha=16), targets=TARGETS)
        params = list(rw.adapters.trainable_parameters(model).values())

        def loss_fn() -> torch.Tensor:
            total, n = causal_lm_loss(model, data)
            return total / n
    else:
        import peft

        cfg = peft.LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS)
        model = peft.get_peft_model(model, cfg)
        params = [p for p in model.parameters() if p.requires_grad]

        def loss_fn() -> torch.Tensor:
            out: torch.Tensor = model(input_ids=data, labels=data, use_cache=False).loss
            return out

    from rankwise.train.memory import activation_checkpointing, mixed_precision

    model.train()
    opt = torch.optim.AdamW(params, lr=1e-4)
    rss_before = _rss_mb()
    times = []
    with activation_checkpointing(model, checkpointing):
        for i in range(warmup + steps):
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with mixed_precision(data.device, precision):
                loss = loss_fn()
            loss.backward()
            opt.step()
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return {"median_step_s": statistics.median(times), "min_step_s": min(times),
            "trainable": float(sum(p.numel() for p in params)), "rss_before_mb": rss_before, "peak_rss_mb": _rss_mb(),
            "threads": float(torch.get_num_threads())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2, help="runs of every configuration, taking turns")
    ap.add_argument("--which", choices=list(SIDES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.which:
        print(json.dumps(measure(args.which, args.steps, args.warmup, args.batch, args.seq)))
        return
    # Every configuration runs --rounds times, all of them taking turns, so that a drift in this shared
    # VM's speed (±20 % within minutes) hits every row alike. Per row: the best of the rounds' median
    # step times, the fastest step, and the highest peak RSS.
    runs: dict[str, list[dict[str, float]]] = {which: [] for which in SIDES}
    for _ in range(args.rounds):
        for which in SIDES:
            cmd = [sys.executable, __file__, "--which", which, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[which].append(json.loads(out.strip().splitlines()[-1]))
    results = {}
    for which, rs in runs.items():
        results[which] = {**rs[0], "median_step_s": min(r["median_step_s"] for r in rs),
                          "min_step_s": min(r["min_step_s"] for r in rs),
                          "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
    threads = int(next(iter(results.values()))["threads"])
    print(f"LoRA r=16 on all 7 projection types of SmolLM2-135M, batch {args.batch} x {args.seq}, "
          f"median of {args.steps} steps after {args.warmup} warm-up (best of {args.rounds} rounds), {threads} threads")
    print(f"{'':32}{'step (s)':>9}{'fastest':>9}{'trainable':>11}{'RSS before':>12}{'peak RSS':>10}"
          f"{'step':>8}{'peak':>8}  compared with")
    for which, (_, _, _, reference) in SIDES.items():
        r = results[which]
        row = (f"{which:32}{r['median_step_s']:>9.3f}{r['min_step_s']:>9.3f}{r['trainable']:>11,.0f}"
               f"{r['rss_before_mb']:>9.0f} MB{r['peak_rss_mb']:>7.0f} MB")
        if reference:
            ref = results[reference]
            row += (f"{r['median_step_s'] / ref['median_step_s']:>7.2f}x"
                    f"{r['peak_rss_mb'] / ref['peak_rss_mb']:>7.2f}x  {reference}")
        print(row)


if __name__ == "__main__":
    main()
