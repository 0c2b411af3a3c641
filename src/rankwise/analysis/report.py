"""`AnalysisReport`: the table (one row per matrix), JSON, CSV, the HTML page and the report folder."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: The usual band of well-trained layers' α (Martin & Mahoney 2021).
ALPHA_BAND = (2.0, 6.0)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class AnalysisReport:
    """Results of :func:`rankwise.analyze`.

    ``rows``: one dict per weight matrix (name, layer, type, rows, cols, metric columns);
    ``spectra``: singular values per matrix, fp32 descending [k];
    ``delta_rows`` / ``delta_spectra``: the same for ΔW = W − W_base (with ``--against``);
    ``gradient_rows``: one dict per gradient matrix (with ``--gradients``);
    ``definitions``: metric name → definition; ``meta``: model, config, timing.
    """

    rows: list[dict[str, Any]]
    spectra: dict[str, torch.Tensor]
    definitions: dict[str, str]
    meta: dict[str, Any]
    delta_rows: list[dict[str, Any]] = field(default_factory=list)
    delta_spectra: dict[str, torch.Tensor] = field(default_factory=dict)
    gradient_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def table(self) -> list[dict[str, Any]]:
        """One row per analysed weight matrix (list of dicts; ``pandas.DataFrame(report.table)`` works)."""
        return self.rows

    def summary(self) -> list[dict[str, Any]]:
        """One row per matrix type: count, shape, means of the main metrics, α band share."""
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in self.rows:
            groups[row["type"]].append(row)
        out = []
        for kind, rows in groups.items():
            alphas = [r["alpha"] for r in rows if r.get("alpha") is not None]
            entry: dict[str, Any] = {"type": kind, "count": len(rows), "shape": f"{rows[0]['rows']}x{rows[0]['cols']}"}
            for col in ("effective_rank", "stable_rank", "rank_90", "welore_rank", "farms_alpha"):
                vals = [r[col] for r in rows if r.get(col) is not None]
                entry[col] = statistics.fmean(vals) if vals else None
            entry["alpha_mean"] = statistics.fmean(alphas) if alphas else None
            entry["alpha_min"] = min(alphas) if alphas else None
            entry["alpha_max"] = max(alphas) if alphas else None
            entry["alpha_in_band"] = sum(ALPHA_BAND[0] <= a <= ALPHA_BAND[1] for a in alphas) / len(alphas) if alphas \
                else None
            out.append(entry)
        return out

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "meta": self.meta,
            "definitions": self.definitions,
            "alpha_band": list(ALPHA_BAND),
            "summary": self.summary(),
            "matrices": self.rows,
        }
        if self.delta_rows:
            payload["delta"] = self.delta_rows
        if self.gradient_rows:
            payload["gradients"] = self.gradient_rows
        clean: dict[str, Any] = _sanitize(payload)
        return clean

    def to_json(self) -> str:
        """The whole report (without the raw spectra) as JSON; missing values are ``null``."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_csv(self, which: str = "matrices") -> str:
        """``which``: "matrices", "delta" or "gradients"; one CSV line per row."""
        rows = {"matrices": self.rows, "delta": self.delta_rows, "gradients": self.gradient_rows}[which]
        columns: list[str] = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if _clean(v) is None else v) for k, v in r.items()})
        return buf.getvalue()

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """The self-contained HTML page (plots embedded as PNG data URIs); written to ``path`` if given."""
        from rankwise.analysis.html import render

        page = render(self)
        if path is not None:
            from rankwise.io.atomic import atomic_write_text

            atomic_write_text(path, page)
        return page

    def save(self, folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write index.html, summary.json, matrices.csv (+ delta.csv, gradients.csv) and spectra.safetensors.

        The folder appears whole or not at all.
        """
        from safetensors.torch import save_file

        from rankwise.io.atomic import atomic_folder

        page = self.to_html()  # render before touching the disk: a plotting error writes nothing
        with atomic_folder(folder, overwrite) as tmp:
            (tmp / "index.html").write_text(page, encoding="utf-8")
            (tmp / "summary.json").write_text(self.to_json(), encoding="utf-8")
            (tmp / "matrices.csv").write_text(self.to_csv("matrices"), encoding="utf-8")
            if self.delta_rows:
                (tmp / "delta.csv").write_text(self.to_csv("delta"), encoding="utf-8")
            if self.gradient_rows:
                (tmp / "gradients.csv").write_text(self.to_csv("gradients"), encoding="utf-8")
            tensors = {name: s.contiguous() for name, s in self.spectra.items()}
            tensors.update({f"delta/{name}": s.contiguous() for name, s in self.delta_spectra.items()})
            save_file(tensors, str(tmp / "spectra.safetensors"))
        return Path(folder)


def _sanitize(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitize(v) for v in value]
    return _clean(value)
