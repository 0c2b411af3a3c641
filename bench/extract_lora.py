"""extract-lora on a real fine-tune: fixed rank against `--rank auto` at the same total size.

A short full fine-tune of SmolLM2-135M on TinyStories (plain PyTorch AdamW loop, every weight trains)
is written as a folder; then its delta is extracted as a LoRA at a fixed rank and with auto ranks
under the same budget. Printed side by side: LoRA parameters, relative delta error (over all
extracted matrices), and held-out TinyStories perplexity of base + extracted adapter against the base
and the fine-tune itself.

    python bench/extract_lora.py [--steps 16] [--rank 32] [--work /tmp/rankwise-extract-bench]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import rankwise as rw
from rankwise.merge.extract import extract_lora


def fine_tune(out: Path, steps: int, lr: float, seed: int = 0) -> Path:
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    model, tok = rw.load_model("smollm2-135m")
    data = rw.data.windows("tinystories", split="calib", seq_len=128, n=steps * 4, seed=seed, tokenizer=tok)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for step in range(steps):
        batch = data[step * 4 : (step + 1) * 4]
        loss = model(batch, labels=batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 4 == 0 or step == steps - 1:
            print(f"fine-tune step {step + 1}/{steps}: loss {float(loss.detach()):.4f}", flush=True)
    model.eval()
    rw.save_model(model, tok, out, produced_by="bench/extract_lora.py fine-tune")
    return out


def with_adapter(folder: Path) -> torch.nn.Module:
    """The base model with the PEFT LoRA in ``folder`` folded into its weights (W + alpha/r · B A)."""
    model, _ = rw.load_model("smollm2-135m")
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    state = dict(model.named_parameters())
    with torch.no_grad():
        for key, A in tensors.items():
            if not key.endswith("lora_A.weight"):
                continue
            layer = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            B = tensors[key.replace("lora_A", "lora_B")]
            alpha = config["alpha_pattern"].get(layer, config["lora_alpha"])
            state[f"{layer}.weight"].add_(B @ A, alpha=alpha / A.shape[0])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "rankwise-extract-bench"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ft = fine_tune(work / f"ft-{args.steps}-{args.lr}", args.steps, args.lr)
    base_model, tok = rw.load_model("smollm2-135m")
    held_out = rw.data.windows("tinystories", split="eval", seq_len=256, n=args.eval_windows, seed=1, tokenizer=tok)

    def ppl(model: torch.nn.Module) -> float:
        return rw.eval.perplexity(model, held_out, progress=False).perplexity

    rows = [("base", 0, float("nan"), ppl(base_model)), ("full fine-tune", 0, 0.0, ppl(rw.load_model(ft)[0]))]
    del base_model
    for label, rank in (("fixed", args.rank), ("auto", "auto")):
        out = work / f"lora-{label}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        report = extract_lora(str(ft), "smollm2-135m", out, rank, budget_rank=args.rank, progress=False)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        details = json.loads((out / "extract_report.json").read_text())
        ranks = sorted(m.rank for m in report.matrices)
        print(f"{label}: {seconds:.1f} s, ranks {ranks[0]}..{ranks[-1]} (median {ranks[len(ranks) // 2]}), "
              f"{len(report.matrices)} matrices", flush=True)
        rows.append((f"rank {rank}" + (f" (budget of rank {args.rank})" if rank == "auto" else ""), report.params,
                     details["total_relative_error"], ppl(with_adapter(out))))
    print()
    print(f"SmolLM2-135M, {args.steps}-step full fine-tune on TinyStories (lr {args.lr}); held-out TinyStories "
          f"perplexity on {args.eval_windows} x 256 tokens")
    print(f"{'model':<34} {'LoRA params':>12} {'delta rel. error':>16} {'perplexity':>10}")
    for label, params, error, value in rows:
        err = "" if math.isnan(error) else f"{error:.4f}"
        print(f"{label:<34} {params:>12,} {err:>16} {value:>10.3f}")
    fixed, auto = rows[2], rows[3]
    print(f"auto vs fixed: error {auto[2] / fixed[2]:.3f}x, perplexity gap to the fine-tune "
          f"{(auto[3] - rows[1][3]) / (fixed[3] - rows[1][3]):.3f}x, params {auto[1] / fixed[1]:.3f}x")


if __name__ == "__main__":
    main()
