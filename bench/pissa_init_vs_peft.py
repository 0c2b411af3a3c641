"""PiSSA init over all 210 block matrices of SmolLM2-135M: rankwise's default vs PEFT, in one run.

Times (single-threaded) rankwise's default init (seeded block-Krylov randomized SVD), PEFT's
``pissa_niter_4`` (fast) and ``pissa`` (exact SVD), and the mean relative Frobenius distance of each
principal part (W₀ − W_res) from the exact rank-r principal part.

    PYTHONPATH=src python bench/pissa_init_vs_peft.py [--rank 16]
"""

from __future__ import annotations

import argparse
import time

import torch

import rankwise as rw


def _weights(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    return {n: model.get_submodule(n).weight.detach().clone() for n in names}


def _residuals(model: torch.nn.Module, names: list[str], peft_wrapped: bool) -> dict[str, torch.Tensor]:
    prefix = "base_model.model." if peft_wrapped else ""
    out = {}
    for n in names:
        m = model.get_submodule(prefix + n)
        out[n] = (m.base_layer.weight if peft_wrapped else m.base.weight).detach()
    return out


def main() -> None:
    import peft

    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both tools (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = args.rank
    base, _ = rw.load_model("smollm2-135m")
    names = rw.modules.select_targets(base, "all-linear")
    original = _weights(base, names)

    timings, principal = {}, {}
    model, _ = rw.load_model("smollm2-135m")
    t = time.perf_counter()
    rw.adapt(model, rw.adapters.PiSSA(rank=r))
    timings["rankwise default"] = time.perf_counter() - t
    principal["rankwise default"] = {n: original[n] - w for n, w in _residuals(model, names, False).items()}
    del model
    for init in ("pissa_niter_4", "pissa"):
        model, _ = rw.load_model("smollm2-135m")
        cfg = peft.LoraConfig(r=r, lora_alpha=r, init_lora_weights=init, target_modules="all-linear")
        t = time.perf_counter()
        model = peft.get_peft_model(model, cfg)
        timings[f"PEFT {init}"] = time.perf_counter() - t
        principal[f"PEFT {init}"] = {n: original[n] - w for n, w in _residuals(model, names, True).items()}
        del model

    exact = principal["PEFT pissa"]  # the exact principal part, W_r from a full SVD
    print(f"PiSSA init, rank {r}, {len(names)} matrices of SmolLM2-135M, {torch.get_num_threads()} thread(s)")
    print(f"{'':22}{'time (s)':>10}{'vs rankwise':>13}{'mean rel. error':>17}{'max rel. error':>16}")
    for key, parts in principal.items():
        errs = torch.tensor([float((parts[n] - exact[n]).norm() / exact[n].norm()) for n in names])
        ratio = timings[key] / timings["rankwise default"]
        print(f"{key:22}{timings[key]:>10.2f}{ratio:>12.2f}x{100 * errs.mean():>16.2f}%{100 * errs.max():>15.2f}%")
    errors = {n: float((principal["rankwise default"][n] - exact[n]).norm() / exact[n].norm()) for n in names}
    worst = max(errors, key=errors.__getitem__)
    sv = torch.linalg.svdvals(original[worst].double())
    print(f"rankwise's worst matrix: {worst} ({100 * errors[worst]:.1f}%), where sigma_{r} / sigma_{r + 1} = "
          f"{float(sv[r - 1] / sv[r]):.4f}: its rank-{r} principal part is barely defined")
    check = {n: rw.linalg.svd(original[n], r).reconstruct() for n in names[:7]}
    worst = max(float((exact[n] - check[n]).norm() / check[n].norm()) for n in check)
    print(f"(reference = PEFT exact 'pissa'; it matches rankwise's exact SVD within {100 * worst:.4f}% on 7 matrices)")


if __name__ == "__main__":
    main()
