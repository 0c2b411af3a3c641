"""LoRA r=16 training step on SmolLM2-135M, rankwise vs PEFT, measured in one run.

All 7 projection types (q/k/v/o/gate/up/down), batch 4 × 256 tokens, AdamW; the median step time
of N steps after warm-up, the trainable-parameter count and the peak RSS of each side. Each side
runs in its own subprocess so that peak RSS is its own. rankwise runs as `rankwise finetune` does by
default, with ``--checkpointing`` (activation checkpointing) and with ``--precision bf16`` (mixed
precision); PEFT runs with its defaults (``labels=`` loss, no checkpointing) and under
``torch.autocast(bfloat16)``, which is what transformers' Trainer does with ``bf16=True``.

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

SIDES = ["rankwise", "rankwise-ckpt", "peft", "rankwise-bf16", "peft-bf16"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(which: str, steps: int, warmup: int, batch: int, seq: int) -> dict[str, float]:
    import torch

    import rankwise as rw

    torch.manual_seed(0)
    model, _ = rw.load_model("smollm2-135m")
    data = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    checkpointing = which == "rankwise-ckpt"
    if which.startswith("rankwise"):
        from rankwise.adapters.train import causal_lm_loss

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

    from rankwise.adapters.train.memory import activation_checkpointing, mixed_precision

    precision = "bf16" if which.endswith("-bf16") else "fp32"
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
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--which", choices=SIDES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.which:
        print(json.dumps(measure(args.which, args.steps, args.warmup, args.batch, args.seq)))
        return
    results = {}
    for which in SIDES:
        cmd = [sys.executable, __file__, "--which", which, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch", str(args.batch), "--seq", str(args.seq)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[which] = json.loads(out.strip().splitlines()[-1])
    r, n, p = results["rankwise"], results["rankwise-ckpt"], results["peft"]
    rb, pb = results["rankwise-bf16"], results["peft-bf16"]
    print(f"LoRA r=16 on all 7 projection types of SmolLM2-135M, batch {args.batch} x {args.seq}, "
          f"median of {args.steps} steps after {args.warmup} warm-up, {int(r['threads'])} threads")
    print(f"{'':22}{'rankwise':>12}{'PEFT':>12}{'ratio':>9}{'rankwise --checkpointing':>26}{'ratio':>9}"
          f"{'rankwise bf16':>15}{'PEFT bf16':>11}{'ratio':>9}")
    rows = [("step time (s)", "median_step_s", "{:.3f}"), ("fastest step (s)", "min_step_s", "{:.3f}"),
            ("trainable params", "trainable", "{:,.0f}"), ("RSS before train (MB)", "rss_before_mb", "{:.0f}"),
            ("peak RSS (MB)", "peak_rss_mb", "{:.0f}")]
    for label, key, fmt in rows:
        print(f"{label:22}{fmt.format(r[key]):>12}{fmt.format(p[key]):>12}{r[key] / p[key]:>8.2f}x"
              f"{fmt.format(n[key]):>26}{n[key] / p[key]:>8.2f}x"
              f"{fmt.format(rb[key]):>15}{fmt.format(pb[key]):>11}{rb[key] / pb[key]:>8.2f}x")
    print("ratios: rankwise and rankwise --checkpointing against PEFT (fp32); rankwise bf16 against PEFT "
          "under bf16 autocast (transformers' bf16=True)")


if __name__ == "__main__":
    main()
