"""rankwise analyze vs WeightWatcher on SmolLM2-135M: time, α agreement, skipped matrices, peak memory.

Run: .venv/bin/python bench/analyze_vs_weightwatcher.py   (needs `pip install weightwatcher`)
Each tool runs in its own fresh process (so peak memory is that run's own):
  - rankwise with default settings, streaming the model folder (timed: the whole analysis);
  - WeightWatcher(model).analyze() with BLAS pinned to one thread (its best configuration here);
  - WeightWatcher with default settings (skip with --no-ww-default: it takes minutes).
WeightWatcher is timed on analyze() only, after its model is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

PINNED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _child_rankwise(out: str) -> None:
    import resource
    import time

    import torch  # noqa: F401  (baseline memory: the interpreter with torch imported)

    import rankwise as rw
    from rankwise.io import resolve_model_folder

    folder = resolve_model_folder("smollm2-135m")
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    report = rw.analyze(str(folder), progress=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    base_rss, peak = before.ru_maxrss, after.ru_maxrss
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    model_bytes = os.path.getsize(os.path.join(str(folder), "model.safetensors"))
    alphas = {r["name"].removesuffix(".weight"): r["alpha"] for r in report.table}
    with open(out, "w") as fh:
        json.dump({"seconds": seconds, "alphas": alphas, "base_rss_kb": base_rss, "peak_rss_kb": peak,
                   "model_bytes": model_bytes, "threads": report.meta["threads"], "cpu_seconds": cpu,
                   "metrics": sorted(report.definitions)}, fh)


def _child_weightwatcher(out: str) -> None:
    import logging
    import time

    import weightwatcher as ww

    import rankwise as rw

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    model, _ = rw.load_model("smollm2-135m")
    names = [n for n, m in model.named_modules() if hasattr(m, "weight") and getattr(m.weight, "ndim", 0) == 2]
    start = time.perf_counter()
    details = ww.WeightWatcher(model=model).analyze()
    seconds = time.perf_counter() - start
    col = "longname" if "longname" in details.columns else "name"
    alphas = {str(r[col]): float(r["alpha"]) for _, r in details.iterrows()}
    with open(out, "w") as fh:
        json.dump({"seconds": seconds, "alphas": alphas, "modules": names}, fh)


def _run(kind: str, env_extra: dict[str, str]) -> dict[str, object]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    env = dict(os.environ, **env_extra)
    subprocess.run([sys.executable, __file__, "--child", kind, path], env=env, check=True)
    with open(path) as fh:
        result: dict[str, object] = json.load(fh)
    os.unlink(path)
    return result


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-ww-default", action="store_true", help="skip WeightWatcher with default threads")
    ww_default = not ap.parse_args().no_ww_default
    rw_res = _run("rankwise", {})
    pinned = _run("ww", PINNED)
    default = _run("ww", {}) if ww_default else None
    rw_alpha: dict[str, float] = rw_res["alphas"]  # type: ignore[assignment]
    ww_alpha: dict[str, float] = pinned["alphas"]  # type: ignore[assignment]
    print("SmolLM2-135M, 2-core CPU; each tool in a fresh process, default rankwise settings")
    print(f"{'tool':50s} {'seconds':>9s} {'matrices':>9s} {'rankwise speed-up':>18s}")
    rows = [("rankwise analyze (folder, streamed)", rw_res), ("WeightWatcher analyze(), BLAS pinned to 1 thread",
                                                             pinned)]
    if default is not None:
        rows.append(("WeightWatcher analyze(), default threads", default))
    for label, res in rows:
        secs = float(res["seconds"])  # type: ignore[arg-type]
        count = len(res["alphas"])  # type: ignore[arg-type]
        print(f"{label:50s} {secs:9.1f} {count:9d} {secs / float(rw_res['seconds']):17.1f}x")  # type: ignore[arg-type]
    print(f"rankwise: {float(rw_res['cpu_seconds']):.1f} s CPU over {float(rw_res['seconds']):.1f} s wall on "  # type: ignore[arg-type]
          f"{rw_res['threads']} threads (no oversubscription: CPU/wall <= threads); metrics: "
          f"{', '.join(rw_res['metrics'])}")  # type: ignore[arg-type]
    common = [n for n in ww_alpha if n in rw_alpha and rw_alpha[n] is not None and ww_alpha[n] > 0]
    diffs = sorted(((abs(rw_alpha[n] - ww_alpha[n]), n) for n in common), reverse=True)
    print(f"\nalpha on the {len(common)} matrices both tools fit: largest |difference| {diffs[0][0]:.4f} "
          f"({diffs[0][1]}: rankwise {rw_alpha[diffs[0][1]]:.4f}, WeightWatcher {ww_alpha[diffs[0][1]]:.4f}); "
          f"median {diffs[len(diffs) // 2][0]:.2e}; within 0.05: {sum(d <= 0.05 for d, _ in diffs)}/{len(diffs)}")
    failed = sorted(n for n, a in ww_alpha.items() if a <= 0)
    skipped = sorted(n for n in rw_alpha if n not in ww_alpha)
    print(f"matrices WeightWatcher skipped that rankwise analysed: {', '.join(skipped) or 'none'}")
    if failed:
        print(f"matrices whose WeightWatcher fit failed (alpha = -1): {', '.join(failed)}")
    model_mib = float(rw_res["model_bytes"]) / 2**20  # type: ignore[arg-type]
    base_mib = float(rw_res["base_rss_kb"]) / 1024  # type: ignore[arg-type]
    peak_mib = float(rw_res["peak_rss_kb"]) / 1024  # type: ignore[arg-type]
    print(f"\npeak memory of the folder analysis: {peak_mib:.0f} MiB RSS ({peak_mib - base_mib:.0f} MiB above the "
          f"{base_mib:.0f} MiB of python + torch + rankwise); model.safetensors: {model_mib:.0f} MiB; "
          f"largest matrix (embedding 49152x576 fp32): {49152 * 576 * 4 / 2**20:.0f} MiB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        {"rankwise": _child_rankwise, "ww": _child_weightwatcher}[sys.argv[2]](sys.argv[3])
    else:
        main()
