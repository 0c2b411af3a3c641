"""rankwise merge against mergekit on SmolLM2-135M: same configs, tensors compared, wall time and peak RSS.

Two "fine-tunes" of the bundled SmolLM2-135M are written as folders: every block matrix gets its own
seeded low-rank perturbation (rank 8, ~2 % of the matrix's norm). For each method both tools run the
same mergekit YAML in a fresh process (wall time and peak RSS from /usr/bin/time); then every output
tensor of rankwise is compared with mergekit's.

    python bench/merge_vs_mergekit.py [--mergekit /work/mergekit-venv/bin/mergekit-yaml] [--rounds 1]

mergekit runs in its own venv (it pins its own transformers): python3 -m venv /work/mergekit-venv, then
pip install torch==2.13.0 (the CPU wheel) first, then pip install mergekit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from rankwise.io.loading import resolve_model_folder
from rankwise.io.tensors import TensorFolder

METHODS: dict[str, dict[str, object]] = {
    "linear": {"models": [("base", {"weight": 0.4}), ("ft1", {"weight": 0.3}), ("ft2", {"weight": 0.3})]},
    "slerp": {"models": [("base", None), ("ft1", None)],
              "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                                   {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}},
    "task_arithmetic": {"models": [("ft1", {"weight": 0.5}), ("ft2", {"weight": 0.5})]},
    "ties": {"models": [("base", None), ("ft1", {"weight": 0.5, "density": 0.5}),
                        ("ft2", {"weight": 0.5, "density": 0.5})], "parameters": {"normalize": True}},
}


def make_variant(base: Path, out: Path, seed: int, rank: int = 8, scale: float = 0.02) -> Path:
    """The base with a seeded rank-``rank`` perturbation of ‖W‖·``scale`` added to every block matrix."""
    if (out / "config.json").is_file():
        return out
    folder = TensorFolder(base)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in folder.names():
        W = folder.get(name)
        if ".layers." in name and W.ndim == 2:
            U, V = torch.randn(W.shape[0], rank, generator=g), torch.randn(rank, W.shape[1], generator=g)
            P = U @ V
            W = (W.float() + P * (scale * float(W.float().norm()) / float(P.norm()))).to(W.dtype)
        tensors[name] = W.contiguous()
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    for f in base.iterdir():
        if f.suffix in (".json", ".jinja") and f.name != "rankwise.json":
            shutil.copyfile(f, tmp / f.name)
    tmp.rename(out)
    return out


def write_config(method: str, paths: dict[str, Path], where: Path) -> Path:
    spec = METHODS[method]
    models = []
    for key, params in spec["models"]:  # type: ignore[attr-defined]
        entry: dict[str, object] = {"model": str(paths[key])}
        if params:
            entry["parameters"] = params
        models.append(entry)
    config: dict[str, object] = {"merge_method": method, "models": models, "dtype": "float32"}
    if method != "linear":
        config["base_model"] = str(paths["base"])
    if "parameters" in spec:
        config["parameters"] = spec["parameters"]
    path = where / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds user + system) of one command in a fresh process."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stderr[-3000:]}")
    wall, kib, user, system = proc.stderr.strip().splitlines()[-1].split()
    return float(wall), int(kib) / 1024, float(user) + float(system)


def max_difference(ours: Path, theirs: Path) -> tuple[float, int, list[str]]:
    """(largest |difference| over common tensors, tensors compared, tensor names only one side has)."""
    a, b = TensorFolder(ours), TensorFolder(theirs)
    worst = 0.0
    common = [n for n in a.names() if n in b]
    for name in common:
        x, y = a.get(name).double(), b.get(name).double()
        worst = max(worst, float((x - y).abs().max()) if x.numel() else 0.0)
    only = sorted(set(a.names()) ^ set(b.names()))
    return worst, len(common), only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mergekit", default="/work/mergekit-venv/bin/mergekit-yaml")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "rankwise-merge-bench"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rounds", type=int, default=3, help="runs per tool, taking turns; best wall time, "
                        "largest RSS reported (CPU: best)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = resolve_model_folder("smollm2-135m")
    assert isinstance(base, Path)
    paths = {"base": base, "ft1": make_variant(base, work / "ft1", 1), "ft2": make_variant(base, work / "ft2", 2)}
    rankwise_cli = str(Path(sys.executable).parent / "rankwise")
    rows = []
    for method in args.methods.split(","):
        cfg = write_config(method, paths, work)
        out_rw, out_mk = work / f"out-rw-{method}", work / f"out-mk-{method}"
        shutil.rmtree(out_rw, ignore_errors=True)
        shutil.rmtree(out_mk, ignore_errors=True)
        mk_runs, rw_runs = [], []
        for i in range(args.rounds):  # take turns, so load from other processes hits both tools alike
            shutil.rmtree(out_rw, ignore_errors=True)
            shutil.rmtree(out_mk, ignore_errors=True)
            first, second = ((mk_runs, [args.mergekit, str(cfg), str(out_mk), "--quiet"]),
                             (rw_runs, [rankwise_cli, "merge", str(cfg), "--out", str(out_rw), "--quiet"]))
            for runs, cmd in ((first, second) if i % 2 == 0 else (second, first)):
                runs.append(timed(cmd))
        mk_wall, mk_rss, mk_cpu = min(w for w, _, _ in mk_runs), max(r for _, r, _ in mk_runs), min(
            c for _, _, c in mk_runs)
        rw_wall, rw_rss, rw_cpu = min(w for w, _, _ in rw_runs), max(r for _, r, _ in rw_runs), min(
            c for _, _, c in rw_runs)
        diff, compared, only = max_difference(out_rw, out_mk)
        rows.append((method, rw_wall, mk_wall, rw_cpu, mk_cpu, rw_rss, mk_rss, diff, compared))
        print(json.dumps({"method": method, "rankwise_s": rw_wall, "mergekit_s": mk_wall, "rankwise_cpu_s": rw_cpu,
                          "mergekit_cpu_s": mk_cpu, "rankwise_rss_mib": rw_rss,
                          "mergekit_rss_mib": mk_rss, "max_abs_diff": diff, "tensors": compared,
                          "only_one_side": only}), flush=True)
    print()
    print(f"best of {args.rounds} runs per tool (taking turns), each a fresh process; peak RSS from /usr/bin/time")
    print(f"{'method':<16} {'wall s rankwise':>15} {'mergekit':>9} {'ratio':>6}  {'CPU s rankwise':>14} "
          f"{'mergekit':>9} {'ratio':>6}  {'RSS MiB rankwise':>16} {'mergekit':>9}  {'max |diff|':>10} {'tensors':>7}")
    for method, rw_wall, mk_wall, rw_cpu, mk_cpu, rw_rss, mk_rss, diff, compared in rows:
        print(f"{method:<16} {rw_wall:>15.2f} {mk_wall:>9.2f} {rw_wall / mk_wall:>5.2f}x  {rw_cpu:>14.2f} "
              f"{mk_cpu:>9.2f} {rw_cpu / mk_cpu:>5.2f}x  {rw_rss:>16.0f} {mk_rss:>9.0f}  {diff:>10.2e} {compared:>7}")


if __name__ == "__main__":
    main()
