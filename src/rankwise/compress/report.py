"""`CompressionReport`: what was compressed, how much, at what error, and how long each stage took."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from rankwise.eval.speed import speedup_line

RATIO_SEMANTICS = ("ratio = fraction of the targeted matrices' parameters removed; a rank-r factorization of an "
                   "m x n matrix stores r(m+n) numbers and stays dense when r >= mn/(m+n)")


@dataclass
class MatrixResult:
    name: str
    shape: tuple[int, int]
    rank: int | None  # None: stayed dense
    params_before: int
    params_after: int
    error: float  # relative output error ‖(W − Ŵ)X‖²_F / ‖W X‖²_F on calibration data (weight error if no data)


@dataclass
class CompressionReport:
    method: str
    config: dict[str, Any]
    ratio_requested: float
    matrices: list[MatrixResult]
    model_params_before: int
    model_params_after: int
    timings: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    error_kind: str = "activation"  # activation, weight, or output-matching (‖W X − Ŵ X̃‖² / ‖W X‖²)
    fallbacks: list[str] = field(default_factory=list)  # layers whose correction fell back to whitening
    cached: list[str] = field(default_factory=list)  # evaluation keys read from the cache, not measured
    healing: dict[str, Any] = field(default_factory=dict)  # steps, KL per step, divergence (compress.heal)

    @property
    def targeted_before(self) -> int:
        return sum(m.params_before for m in self.matrices)

    @property
    def targeted_after(self) -> int:
        return sum(m.params_after for m in self.matrices)

    @property
    def ratio_achieved(self) -> float:
        return 1.0 - self.targeted_after / self.targeted_before

    @property
    def rank_map(self) -> dict[str, int]:
        return {m.name: m.rank for m in self.matrices if m.rank is not None}

    def by_type(self) -> dict[str, dict[str, Any]]:
        """Per matrix type (layer index dropped): ranks, dense count, parameters, mean error."""
        from rankwise.eval.params import module_type

        groups: dict[str, list[MatrixResult]] = defaultdict(list)
        for m in self.matrices:
            groups[module_type(m.name + ".weight").removesuffix(".weight")].append(m)
        out = {}
        for kind, items in groups.items():
            ranks = [m.rank for m in items if m.rank is not None]
            out[kind] = {
                "count": len(items), "dense": sum(m.rank is None for m in items),
                "rank_min": min(ranks) if ranks else None, "rank_max": max(ranks) if ranks else None,
                "rank_mean": sum(ranks) / len(ranks) if ranks else None,
                "params_before": sum(m.params_before for m in items),
                "params_after": sum(m.params_after for m in items),
                "error_mean": sum(m.error for m in items) / len(items),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "config": self.config, "ratio_semantics": RATIO_SEMANTICS,
            "ratio_requested": self.ratio_requested, "ratio_achieved": self.ratio_achieved,
            "targeted_params_before": self.targeted_before, "targeted_params_after": self.targeted_after,
            "model_params_before": self.model_params_before, "model_params_after": self.model_params_after,
            "error_kind": self.error_kind, "by_type": self.by_type(), "timings_s": self.timings,
            "correction_fallbacks": self.fallbacks, "evaluation_from_cache": self.cached, "healing": self.healing,
            "evaluation": self.evaluation, "matrices": [asdict(m) for m in self.matrices],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def table(self) -> str:
        """Terminal table: per type ranks and parameters, totals, errors, evaluation and timings."""
        lines = [f"{self.method}  ratio {self.ratio_requested:.2f} requested, {self.ratio_achieved:.3f} achieved "
                 "(share of targeted parameters removed)", ""]
        header = f"{'matrix type':<18}{'n':>4}{'dense':>6}{'rank min/mean/max':>20}{'params before':>15}" \
                 f"{'after':>12}{'rel. error':>12}"
        lines += [header, "-" * len(header)]
        for kind, g in self.by_type().items():
            ranks = "-" if g["rank_min"] is None else f"{g['rank_min']}/{g['rank_mean']:.0f}/{g['rank_max']}"
            lines.append(f"{kind:<18}{g['count']:>4}{g['dense']:>6}{ranks:>20}{g['params_before']:>15,}"
                         f"{g['params_after']:>12,}{g['error_mean']:>12.4f}")
        lines += ["", f"targeted parameters  {self.targeted_before:>13,} -> {self.targeted_after:>13,}",
                  f"model parameters     {self.model_params_before:>13,} -> {self.model_params_after:>13,}"]
        ev = self.evaluation
        for key in sorted(k for k in ev if k.startswith("ppl_") and k.endswith("_before")):
            data = key[4:-7]
            before, after = ev[key], ev.get(f"ppl_{data}_after")
            if after is not None:
                lines.append(f"perplexity {data:<9} {before:>13.2f} -> {after:>13.2f}   ({after / before:.2f}x)")
        share = min(ev.get("speed_cpu_share_before", 1.0), ev.get("speed_cpu_share_after", 1.0))
        for kind in ("prefill", "decode"):
            b, a = ev.get(f"{kind}_tokens_per_s_before"), ev.get(f"{kind}_tokens_per_s_after")
            if b and a:
                lines.append(speedup_line(kind, b, a, share))
        if self.healing.get("summary"):
            lines.append(str(self.healing["summary"]))
        if self.cached:
            keys = ", ".join(sorted(self.cached))
            lines.append(f"from the cache (same weights and windows as an earlier run): {keys}")
        if self.fallbacks:
            shown = ", ".join(self.fallbacks[:4]) + (" ..." if len(self.fallbacks) > 4 else "")
            lines.append(f"correction fell back to plain whitening (singular input Gram) for {len(self.fallbacks)} "
                         f"layers: {shown}")
        if self.timings:
            lines.append("wall time (s)        " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()))
        return "\n".join(lines)
