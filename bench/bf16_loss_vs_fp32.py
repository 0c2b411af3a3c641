"""Mixed precision: does a bf16 LoRA run follow its fp32 run? rankwise vs PEFT, in one run.

LoRA r=16 on all 7 projection types of SmolLM2-135M, 4 × 256-token TinyStories windows per step,
AdamW at a constant lr, the same windows for every run. Each tool trains twice from the same init,
in fp32 and under bf16 autocast (rankwise: ``--precision bf16``; PEFT: ``torch.autocast``, which is
what transformers' Trainer does with ``bf16=True``), and the script prints how far each bf16 loss
curve is from its own fp32 curve, plus the fp32 loss on held-out windows after training.

    PYTHONPATH=src python bench/bf16_loss_vs_fp32.py [--steps 20] [--lr 2e-4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def train(which: str, precision: str, steps: int, lr: float) -> dict[str, object]:
    import torch

    import rankwise as rw
    from rankwise.data import windows
    from rankwise.train import causal_lm_loss
    from rankwise.train.memory import mixed_precision

    model, tokenizer = rw.load_model("smollm2-135m")
    data = windows("tinystories", "calib", 256, tokenizer=tokenizer)[: 4 * steps]
    held = windows("tinystories", "eval", 256, tokens=4096, tokenizer=tokenizer)
    torch.manual_seed(0)
    if which == "rankwise":
        rw.adapt(model, rw.adapters.LoRA(rank=16, alpha=16), targets=TARGETS)
        params = list(rw.adapters.trainable_parameters(model).values())

        def mean_loss(batch: torch.Tensor) -> torch.Tensor:
            total, n = causal_lm_loss(model, batch)
            return total / n
    else:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0,
                                                           target_modules=TARGETS))
        params = [p for p in model.parameters() if p.requires_grad]

        def mean_loss(batch: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = model(input_ids=batch, labels=batch, use_cache=False).loss
            return out

    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        batch = data[4 * step : 4 * step + 4]
        optimizer.zero_grad(set_to_none=True)
        with mixed_precision(batch.device, precision):
            loss = mean_loss(batch)
        loss.float().backward()
        optimizer.step()
        losses.append(float(loss))
    model.eval()
    with torch.no_grad():  # held-out loss in fp32 for every run
        held_losses = [float(mean_loss(held[i : i + 4])) for i in range(0, held.shape[0], 4)]
    return {"losses": losses, "held_out": sum(held_losses) / len(held_losses)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=2e-4, help="default: rankwise finetune's default lr")
    ap.add_argument("--early", type=int, default=9, help="steps counted as 'early' in the summary")
    ap.add_argument("--run", nargs=2, metavar=("TOOL", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(train(args.run[0], args.run[1], args.steps, args.lr)))
        return
    runs = {}
    for tool in ("rankwise", "peft"):
        for precision in ("fp32", "bf16"):
            cmd = [sys.executable, __file__, "--run", tool, precision, "--steps", str(args.steps), "--lr", str(args.lr)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[tool, precision] = json.loads(out.strip().splitlines()[-1])
    print(f"LoRA r=16, 7 projection types of SmolLM2-135M, {args.steps} steps of 4 x 256 tokens, AdamW lr {args.lr}")
    print(f"{'':10}{'bf16 - fp32 loss, steps 1-' + str(args.early):>30}{'all steps':>12}"
          f"{'held-out loss fp32 run':>24}{'bf16 run':>10}")
    for tool in ("rankwise", "peft"):
        fp32, bf16 = runs[tool, "fp32"], runs[tool, "bf16"]
        gaps = [b - a for a, b in zip(fp32["losses"], bf16["losses"], strict=True)]  # type: ignore[call-overload]
        early = max(gaps[: args.early], key=abs)
        overall = max(gaps, key=abs)
        print(f"{tool:10}{early:>+30.4f}{overall:>+12.4f}{fp32['held_out']:>24.4f}{bf16['held_out']:>10.4f}")
    print("(largest |difference| per tool, signed; each tool's bf16 run against its own fp32 run)")


if __name__ == "__main__":
    main()
