"""Compression of SmolLM2-135M: rankwise's default against one-shot uniform whitening (the SVD-LLM recipe).

Protocol (fixed by the issue): calibration 64 windows x 256 tokens of wiki calib (seed 0); perplexity
on 16,384 tokens of wiki eval and of c4 eval, 256-token windows; the 7 projections of every block.

Prints, from one run:
  1. the headline table: dense, reference (svd_llm + uniform, one-shot) and rankwise's default at each
     ratio, full protocol, with compressed/dense perplexity ratios and default/reference ratio;
  2. compression wall and CPU time of the default (calibration + decomposition + correction, no evaluation);
  3. prefill/decode speed of the 40 % model against dense (or why none is given on a loaded machine);
  4. the ablation: which of correction, sequential mode, allocation and healing each gain comes from, one
     row each (full protocol, one shared dense calibration): one-shot + global, one-shot + uniform,
     sequential + global, correction + global (exact), correction with each --ridges value, the default,
     and with --heal-steps N the default followed by N healing steps of 4 windows (KL to the dense
     model on wiki calib windows, a new one per sequence; --heal-only-ratios adds ratios with only
     the default and its healing);
  5. the grid: every method x allocator x ratio (+ sequential vs one-shot) on --grid-tokens of wiki eval.

Run: .venv/bin/python bench/compress_smollm2.py [--ratios 0.2,0.4] [--heal-steps 100] [--heal-only-ratios 0.6]
         [--ridges 0.1,1]
         [--grid-tokens 4096] [--no-grid] [--no-headline] [--no-ablation]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from typing import Any

import torch

import rankwise as rw
from rankwise.cli.compress import DEFAULT_ALLOC, DEFAULT_METHOD
from rankwise.compress import CONFIGS, decompose, realize
from rankwise.compress.blockwise import apply_blockwise
from rankwise.compress.pipeline import pipeline_name

SEQUENTIAL_DEFAULT = rw.compress.SVDLLM.model_fields["sequential"].default
CORRECT_DEFAULT = rw.compress.SVDLLM.model_fields["correct"].default
RIDGE_DEFAULT = rw.compress.SVDLLM.model_fields["correct_ridge"].default


def ppl(model: torch.nn.Module, wins: torch.Tensor) -> float:
    return rw.eval.perplexity(model, wins, progress=False).perplexity


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ratios", default="0.2,0.4")
    parser.add_argument("--grid-tokens", type=int, default=4096)
    parser.add_argument("--no-grid", action="store_true")
    parser.add_argument("--no-headline", action="store_true")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--heal-steps", type=int, default=0,
                        help="also a row with the default followed by this many healing steps (0: none)")
    parser.add_argument("--heal-only-ratios", default="",
                        help="further ratios at which only the default row and its healing run (e.g. 0.6)")
    parser.add_argument("--ridges", default="",
                        help="also ablation rows with correction at these --correct-ridge values (comma list)")
    parser.add_argument("--sequential-methods", default="svd_llm",
                        help="methods also run sequentially in the grid (each sequential cell recalibrates)")
    parser.add_argument("--sequential-allocs", default="uniform,global")
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    model, tok = rw.load_model("smollm2-135m")
    calib = rw.data.windows("wiki", split="calib", seq_len=256, n=64, seed=0, tokenizer=tok)
    evals = {s: rw.data.windows(s, split="eval", seq_len=256, tokens=16384, tokenizer=tok) for s in ("wiki", "c4")}
    dense = {s: ppl(model, w) for s, w in evals.items()}
    print(f"dense: wiki {dense['wiki']:.2f}  c4 {dense['c4']:.2f}", flush=True)

    if not args.no_headline:
        headline(model, calib, evals, dense, ratios)
    if not args.no_ablation:
        # healing reads wiki calib windows, a new one for every sequence of every step (the calibration
        # windows are the first 64 of them: same seed); CLI: rankwise compress --heal-steps N
        heal_windows = rw.data.windows("wiki", split="calib", seq_len=256, n=max(64, args.heal_steps * HEAL_BATCH),
                                       seed=0, tokenizer=tok)
        ablation(model, calib, evals, dense, ratios, args.heal_steps,
                 [float(r) for r in args.ridges.split(",") if r], heal_windows,
                 [float(r) for r in args.heal_only_ratios.split(",") if r])
    if not args.no_grid:
        grid(model, calib, evals, ratios, args)


def headline(model: torch.nn.Module, calib: torch.Tensor, evals: dict[str, torch.Tensor], dense: dict[str, float],
             ratios: list[float]) -> None:
    # 1. reference and default, full protocol
    reference = decompose(model, rw.compress.SVDLLM(ratio=ratios[0], alloc="uniform"), calib=calib, progress=False)
    rows = []
    for ratio in ratios:
        ref_model = copy.deepcopy(model)
        recipe = rw.compress.SVDLLM(ratio=ratio, alloc="uniform", correct=False)  # one-shot, as the paper
        realize(ref_model, dataclasses.replace(reference, config=recipe), ratio, progress=False)
        ref = {s: ppl(ref_model, w) for s, w in evals.items()}
        del ref_model
        default_model = copy.deepcopy(model)
        config = CONFIGS[DEFAULT_METHOD](ratio=ratio, alloc=DEFAULT_ALLOC)
        t0, c0 = time.perf_counter(), time.process_time()
        report = rw.compress.apply(default_model, config, calib=calib, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ours = {s: ppl(default_model, w) for s, w in evals.items()}
        speed = None
        if abs(ratio - 0.4) < 1e-9:
            speed = (rw.eval.throughput(model, evals["wiki"][0]), rw.eval.throughput(default_model, evals["wiki"][0]))
        rows.append((ratio, ref, ours, report, wall, cpu, speed))
        del default_model

    print(f"\nrankwise default: method={DEFAULT_METHOD} alloc={DEFAULT_ALLOC} sequential={SEQUENTIAL_DEFAULT} "
          f"correct={CORRECT_DEFAULT} correct_ridge={RIDGE_DEFAULT}; "
          "reference: svd_llm + uniform ranks, one-shot")
    print(f"{'ratio':>5} {'data':>5} {'dense':>8} {'reference':>10} {'ref/dense':>10} {'rankwise':>10} "
          f"{'rw/dense':>9} {'rw-ratio / ref-ratio':>21}")
    for ratio, ref, ours, *_ in rows:
        for s in ("wiki", "c4"):
            r_ref, r_rw = ref[s] / dense[s], ours[s] / dense[s]
            print(f"{ratio:>5.2f} {s:>5} {dense[s]:>8.2f} {ref[s]:>10.2f} {r_ref:>10.2f} {ours[s]:>10.2f} "
                  f"{r_rw:>9.2f} {r_rw / r_ref:>21.2f}")
    print()
    for ratio, _, _, report, wall, cpu, speed in rows:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items())
        print(f"compression at {ratio:.2f} (calibration + decomposition + correction, no evaluation): "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU  [{stages}]; achieved ratio {report.ratio_achieved:.3f}")
        if speed:
            d, c = speed
            share = min(d.cpu_share, c.cpu_share)
            print(f"  speed at {ratio:.2f}:")
            print("    " + rw.eval.speedup_line("prefill", d.prefill_tokens_per_s, c.prefill_tokens_per_s, share))
            print("    " + rw.eval.speedup_line("decode", d.decode_tokens_per_s, c.decode_tokens_per_s, share))


# label -> SVDLLM settings; each row changes one thing against its neighbour
ABLATION: dict[str, dict[str, Any]] = {
    "one-shot, global": {"correct": False, "sequential": False, "alloc": "global"},
    "one-shot, uniform": {"correct": False, "sequential": False, "alloc": "uniform"},
    "sequential, global": {"correct": False, "sequential": True, "alloc": "global"},
    "correction, global": {"correct": True, "alloc": "global", "correct_ridge": 0.0},
}
#: the settings ablation rows vary, at rankwise's defaults
DEFAULTS: dict[str, Any] = {
    "alloc": DEFAULT_ALLOC,
    **{k: rw.compress.SVDLLM.model_fields[k].default for k in ("correct", "sequential", "correct_ridge")},
}


def _full(settings: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **settings}


def ablation_rows(ridges: list[float]) -> tuple[dict[str, dict[str, Any]], str]:
    """The ablation's rows (with a correction row per ridge) and the label of the row that is
    rankwise's default (added when no row already is): healing continues from that one."""
    rows = dict(ABLATION)
    for ridge in ridges:
        rows[f"correction (ridge {ridge:g}), global"] = {"correct": True, "alloc": "global", "correct_ridge": ridge}
    default = next((label for label, settings in rows.items() if _full(settings) == DEFAULTS), None)
    if default is None:
        default = "rankwise default"
        rows[default] = dict(DEFAULTS)
    return rows, default


def ablation(model: torch.nn.Module, calib: torch.Tensor, evals: dict[str, torch.Tensor], dense: dict[str, float],
             ratios: list[float], heal_steps: int, ridges: list[float], heal_windows: torch.Tensor,
             heal_only_ratios: list[float]) -> None:
    """One row per pipeline/allocation/correction setting at each ratio, all from one dense calibration
    (`decompose` is ratio-independent); the time column is what each row adds to it."""
    t0 = time.perf_counter()
    shared = decompose(model, rw.compress.SVDLLM(ratio=ratios[0], alloc="global"), calib=calib, progress=False)
    print(f"\nablation (svd_llm; compressed/dense perplexity; one shared dense calibration + spectra: "
          f"{time.perf_counter() - t0:.1f} s; the s column is what each row adds)")
    rows, default = ablation_rows(ridges)
    print(f"rankwise default: {', '.join(f'{k}={v}' for k, v in DEFAULTS.items())} (row '{default}')")
    print(f"{'ratio':>5}  {'pipeline, allocation':<44} {'wiki':>8} {'c4':>8} {'s':>7}")
    for ratio in [*ratios, *heal_only_ratios]:
        for label, settings in rows.items():
            if ratio not in ratios and label != default:
                continue
            config = rw.compress.SVDLLM(ratio=ratio, **_full(settings))
            work = copy.deepcopy(model)
            t0 = time.perf_counter()
            if pipeline_name(config) == "one_shot":
                realize(work, dataclasses.replace(shared, config=config), ratio, progress=False)
            else:
                apply_blockwise(work, config, "all-linear", calib, 8, False, dense=shared)
            seconds = time.perf_counter() - t0
            _ablation_row(ratio, label + (" (default)" if label == default and label != "rankwise default" else ""),
                          work, evals, dense, seconds)
            if heal_steps and label == default:
                t0 = time.perf_counter()
                healed = rw.compress.heal(work, model, heal_windows, steps=heal_steps, batch_size=HEAL_BATCH,
                                          progress=False)
                print("       " + healed.line())
                _ablation_row(ratio, f"default + {heal_steps} healing steps", work, evals, dense,
                              time.perf_counter() - t0)
            del work


#: windows per healing step (rw.compress.heal's default)
HEAL_BATCH = 4


def _ablation_row(ratio: float, label: str, work: torch.nn.Module, evals: dict[str, torch.Tensor],
                  dense: dict[str, float], seconds: float) -> None:
    r = {s: ppl(work, w) / dense[s] for s, w in evals.items()}
    print(f"{ratio:>5.2f}  {label:<44} {r['wiki']:>7.3f}x {r['c4']:>7.3f}x {seconds:>7.1f}", flush=True)


def grid(model: torch.nn.Module, calib: torch.Tensor, evals: dict[str, torch.Tensor], ratios: list[float],
         args: argparse.Namespace) -> None:
    # 4. the grid on a shorter wiki eval
    grid_eval = evals["wiki"][: max(1, args.grid_tokens // 256)]
    dense_grid = ppl(model, grid_eval)
    print(f"\ngrid: wiki eval perplexity on {grid_eval.numel()} tokens (dense {dense_grid:.2f}); ratio = ppl/dense")
    allocs = sorted(rw.compress.allocators.ALLOCATORS)
    print(f"{'method':<8} {'mode':<10} {'ratio':>5} " + " ".join(f"{a:>16}" for a in allocs))
    sequential_methods = set(args.sequential_methods.split(",")) if args.sequential_methods else set()
    for method in sorted(CONFIGS):
        modes = [False, True] if method in sequential_methods else [False]
        for sequential in modes:
            dec = None
            if not sequential:
                # alloc="global" makes decompose measure the output sensitivities; welore's raw weight
                # spectra are added here so one decomposition serves every allocator.
                dec = decompose(model, CONFIGS[method](ratio=ratios[0], alloc="global"), calib=calib, progress=False)
                dec.spectra = [dataclasses.replace(s, weight_sv=rw.linalg.singular_values(
                    model.get_submodule(s.name).weight)) for s in dec.spectra]
            for ratio in ratios:
                cells = []
                for alloc in allocs:
                    if sequential and alloc not in args.sequential_allocs.split(","):
                        cells.append("-")
                        continue
                    work = copy.deepcopy(model)
                    extra: dict[str, Any] = {"correct": False} if method == "svd_llm" else {}
                    config = CONFIGS[method](ratio=ratio, alloc=alloc, sequential=sequential, **extra)
                    if dec is not None:
                        realize(work, dataclasses.replace(dec, config=config), ratio, progress=False)
                    else:
                        rw.compress.apply(work, config, calib=calib, progress=False)
                    p = ppl(work, grid_eval)
                    cells.append(f"{p:>9.1f} ({p / dense_grid:>4.1f})")
                    del work
                mode = "sequent." if sequential else "one-shot"
                print(f"{method:<8} {mode:<10} {ratio:>5.2f} " + " ".join(f"{c:>16}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
