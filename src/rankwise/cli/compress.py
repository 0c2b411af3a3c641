"""`rankwise compress MODEL --ratio R[,R...]`: low-rank compression with before/after numbers."""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

from rankwise.cli.common import Interrupted, positive_int, seq_len
from rankwise.errors import RankwiseError

EXAMPLES = """examples:
  rankwise compress smollm2-135m --ratio 0.2 --out out/smol-20
  rankwise compress smollm2-135m --ratio 0.2,0.4,0.6 --out out/smol      # out/smol-20, -40, -60 from one calibration
  rankwise compress smollm2-135m --ratio 0.4 --method asvd --alloc uniform --out out/asvd-40
  rankwise compress smollm2-135m --ratio 0.2 --dense --out out/smol-20-dense   # plain dense HF folder

ratio = fraction of the targeted matrices' parameters removed. A rank-r factorization of an m x n
matrix stores r(m+n) numbers; a matrix whose rank would reach mn/(m+n) stays dense."""

DEFAULT_METHOD = "svd_llm"
DEFAULT_ALLOC = "global"
#: windows per healing step
HEAL_BATCH = 4


def register(sub: Any) -> None:
    p = sub.add_parser("compress", help="low-rank compression with rank allocation under a parameter budget",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="bundled name (smollm2-135m), HF folder, .gguf file or hub id")
    p.add_argument("--ratio", required=True, help="share of targeted parameters to remove, e.g. 0.2 or 0.2,0.4,0.6")
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"svd, asvd, fwsvd or svd_llm (default {DEFAULT_METHOD})")
    p.add_argument("--alloc", default=DEFAULT_ALLOC,
                   help=f"uniform, energy, welore, global or global_relative (default {DEFAULT_ALLOC})")
    p.add_argument("--targets", default="all-linear",
                   help="all-linear, a comma list of suffixes, or re:REGEX (default all-linear)")
    p.add_argument("--calib", default="wiki", help="calibration text source (default wiki, its calib split)")
    p.add_argument("--calib-windows", type=positive_int, default=64,
                   help="calibration windows of --seq-len tokens (default 64)")
    p.add_argument("--seq-len", type=seq_len, default=256,
                   help="tokens per calibration and evaluation window, at most the model's context (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of calibration windows (default 0)")
    p.add_argument("--rank-multiple", type=positive_int, default=8,
                   help="every kept rank is a multiple of this (default 8)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sequential", dest="sequential", action="store_true", default=None,
                      help="collect statistics block by block on the already compressed model "
                           "(default: the method's own setting)")
    mode.add_argument("--one-shot", dest="sequential", action="store_false",
                      help="statistics from the dense model (default: the method's own setting)")
    p.add_argument("--correct", action=argparse.BooleanOptionalAction, default=None,
                   help="svd_llm: output-matching correction, each layer matching the dense model's outputs from "
                        "the compressed model's inputs, block by block (default: on; --no-correct for the ~3x faster "
                        "one-shot whitening)")
    p.add_argument("--correct-ridge", type=float, default=None,
                   help="with --correct: pull each corrected layer's input channels towards the dense weight by "
                        "this multiple of their energy, against overfitting the calibration tokens (0: exact "
                        "correction; default 1)")
    p.add_argument("--heal-steps", type=int, default=0,
                   help="after compressing, train the low-rank factors this many steps to match the dense model's "
                        "next-token distributions (default 0: no healing)")
    p.add_argument("--heal-data", help="healing text, its calib split: a new window for each of the 4 sequences of "
                   "every step, as far as the split has them (default: --calib)")
    p.add_argument("--heal-lr", type=float, default=1e-4, help="healing learning rate (default 1e-4)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted healing run from its last checkpoint (kept in a hidden folder next "
                        "to --out); the compression before it is recomputed, to the same bytes (default: start over)")
    p.add_argument("--eval", default="wiki,c4",
                   help="perplexity sources before/after (comma list; 'none' to skip; default wiki,c4)")
    p.add_argument("--eval-tokens", type=positive_int, default=16384,
                   help="tokens scored per --eval source, before and after (default 16384)")
    p.add_argument("--no-speed", action="store_true", help="skip prefill/decode throughput (default: measure)")
    p.add_argument("--dense", action="store_true",
                   help="write an ordinary dense HF folder, factors multiplied out (default: factored)")
    p.add_argument("--out", required=True, help="output folder (several ratios: OUT-20, OUT-40, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output folders (default: refuse)")
    p.set_defaults(func=run)


def parse_ratios(text: str) -> list[float]:
    try:  # every part must be a number: '0.2,,0.4' or '0.2,' is a typo, not two ratios
        ratios = [float(part) for part in text.split(",")]
    except ValueError:
        raise RankwiseError(f"--ratio must be numbers in (0, 1) separated by commas, such as 0.2,0.4; "
                            f"got '{text}'") from None
    bad = [r for r in ratios if not 0.0 < r < 1.0]
    if bad:
        raise RankwiseError(f"--ratio values must be in (0, 1), the share of targeted parameters removed; "
                            f"got '{text}': pass e.g. 0.2 or 0.2,0.4")
    names = [round(r * 100) for r in ratios]
    if len(set(names)) < len(names):
        raise RankwiseError(f"--ratio repeats a value (folder names use whole percents), got '{text}'; "
                            "give each ratio once")
    return ratios


def output_folders(out: str, ratios: list[float]) -> list[Path]:
    if len(ratios) == 1:
        return [Path(out)]
    return [Path(f"{out}-{round(r * 100):d}") for r in ratios]


def measure(model: Any, sources: dict[str, Any], speed: bool, label: str) -> tuple[dict[str, float], list[str]]:
    from rankwise.compress.evaluate import measure as measure_model

    return measure_model(model, sources, speed, label)


def heal_folder(folder: Path) -> Path:
    """The folder healing for output ``folder`` owns; its checkpoints live in that folder's hidden
    ``.partial`` sibling until healing ends."""
    return folder.parent / f"{folder.name}.heal"


def check_resume(args: argparse.Namespace, folders: list[Path]) -> None:
    """``--resume`` needs healing, and an interrupted healing run for every output folder."""
    from rankwise.train.run_folder import CONFIG_FILE, work_folder

    if not args.resume:
        return
    if args.heal_steps <= 0:
        raise RankwiseError("--resume continues an interrupted healing run; it needs --heal-steps N as in that run")
    for folder in folders:
        progress = work_folder(heal_folder(folder))
        if not (progress / CONFIG_FILE).is_file():
            raise RankwiseError(f"nothing to resume: no interrupted healing run for {folder} (looked for {progress}); "
                                "drop --resume to start again")


def heal_step(args: argparse.Namespace, work: Any, teacher: Any, tok: Any, folder: Path) -> dict[str, Any]:
    from rankwise.compress import heal
    from rankwise.data.windows import token_stream, windows

    source = args.heal_data or args.calib
    # a new window for every sequence of every step where the split has that many (healing on the 64
    # calibration windows alone repeats each one several times and fits them, not the language);
    # with the calibration's seed the calibration windows come first
    available = token_stream(source, "calib", tok).numel() // args.seq_len
    wanted = max(args.calib_windows, min(args.heal_steps * HEAL_BATCH, available))
    data = windows(source, split="calib", seq_len=args.seq_len, n=wanted, seed=args.seed, tokenizer=tok)
    t0 = time.perf_counter()
    try:
        healed = heal(work, teacher, data, steps=args.heal_steps, lr=args.heal_lr, batch_size=HEAL_BATCH,
                      seed=args.seed, run_dir=heal_folder(folder), resume=args.resume)
    except KeyboardInterrupt:
        from rankwise.train.run_folder import work_folder

        progress = work_folder(heal_folder(folder))
        if progress.exists():
            raise Interrupted([], note=f"healing progress kept in {progress}; run the same command with --resume "
                                       "to continue") from None
        raise
    return {"steps": healed.steps, "kl_per_step": healed.losses, "diverged": healed.diverged,
            "lr": args.heal_lr, "data": args.heal_data or args.calib, "seconds": time.perf_counter() - t0,
            "summary": healed.line()}


def run(args: argparse.Namespace) -> int:
    from rankwise.compress import CONFIGS, decompose, pipeline_name, realize, save_compressed
    from rankwise.compress.allocators import get_allocator
    from rankwise.compress.blockwise import apply_blockwise
    from rankwise.compress.registry import get_compressor
    from rankwise.data.sources import documents
    from rankwise.data.windows import windows
    from rankwise.io.atomic import check_output_folder
    from rankwise.io.loading import check_seq_len, load_model, model_config

    # Every cheap check first: nothing long runs and nothing is written on a bad input.
    ratios = parse_ratios(args.ratio)
    get_compressor(args.method)
    get_allocator(args.alloc)
    if args.heal_steps < 0 or not args.heal_lr > 0:  # `not >` also refuses nan
        raise RankwiseError("--heal-steps must be >= 0 and --heal-lr > 0; e.g. --heal-steps 200 --heal-lr 1e-4")
    folders = output_folders(args.out, ratios)
    for folder in folders:
        check_output_folder(folder, args.overwrite)
    check_resume(args, folders)
    eval_sources = [] if args.eval == "none" else [s for s in args.eval.split(",") if s]
    for source in [args.calib, *eval_sources, *([args.heal_data] if args.heal_data else [])]:
        documents(source, "calib")
    targets: Any = args.targets if args.targets == "all-linear" or args.targets.startswith("re:") \
        else args.targets.split(",")
    config_class = CONFIGS[args.method]
    extra: dict[str, Any] = {} if args.sequential is None else {"sequential": args.sequential}
    if args.correct is not None:
        if args.method != "svd_llm":
            raise RankwiseError(f"--correct/--no-correct applies to --method svd_llm only, not '{args.method}'; "
                                "drop the option or use svd_llm")
        extra["correct"] = args.correct
    if args.correct_ridge is not None:
        if args.method != "svd_llm" or not (args.correct_ridge >= 0):
            raise RankwiseError(f"--correct-ridge must be a number >= 0 with --method svd_llm, got "
                                f"{args.correct_ridge} with '{args.method}'; e.g. --correct --correct-ridge 0.01")
        extra["correct_ridge"] = args.correct_ridge
    configs = [config_class(ratio=r, alloc=args.alloc, rank_multiple=args.rank_multiple, **extra) for r in ratios]
    check_seq_len(model_config(args.model), args.seq_len)

    model, tok = load_model(args.model)
    calib = windows(args.calib, split="calib", seq_len=args.seq_len, n=args.calib_windows, seed=args.seed,
                    tokenizer=tok)
    eval_windows = {s: windows(s, split="eval", seq_len=args.seq_len, tokens=args.eval_tokens, tokenizer=tok)
                    for s in eval_sources}
    t0 = time.perf_counter()
    before, cached_before = measure(model, eval_windows, not args.no_speed, "dense")
    eval_before = time.perf_counter() - t0
    # the dense calibration, shared by every ratio (spectra alone when every ratio factorizes block by block)
    one_shot = any(pipeline_name(c) == "one_shot" for c in configs)
    shared = decompose(model, configs[0], targets, calib, factorize=one_shot)
    teacher = copy.deepcopy(model) if args.heal_steps > 0 and len(configs) == 1 else model
    written: list[str] = []
    try:
        for config, folder in zip(configs, folders, strict=True):
            work = copy.deepcopy(model) if len(configs) > 1 else model
            if pipeline_name(config) == "one_shot":
                report = realize(work, shared, config.ratio)
                report.config = config.model_dump()
            else:
                report = apply_blockwise(work, config, targets, calib, 8, True, dense=shared)
            if args.heal_steps > 0:
                report.healing = heal_step(args, work, teacher, tok, folder)
            t1 = time.perf_counter()
            after, cached_after = measure(work, eval_windows, not args.no_speed, "compressed")
            report.timings["evaluation"] = eval_before + time.perf_counter() - t1
            report.evaluation = {f"{k}_before": v for k, v in before.items()} | \
                {f"{k}_after": v for k, v in after.items()}
            report.cached = [f"{k}_before" for k in cached_before] + [f"{k}_after" for k in cached_after]
            save_compressed(work, tok, folder, report, dense=args.dense, overwrite=args.overwrite)
            written.append(str(folder))
            print(report.table())
            print(f"wrote {folder}\n")
    except KeyboardInterrupt as exc:
        if written:  # the folders already complete are whole and valid: keep them, and say so
            raise Interrupted(written, note=getattr(exc, "note", None)) from None
        raise
    return 0
