"""matplotlib figures of a report, each returned as a base64 PNG for embedding in the HTML page."""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from rankwise.analysis.report import AnalysisReport


def _png(fig: Figure) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _by_type(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["type"]].append(r)
    return groups


def _grid(n: int) -> tuple[Figure, list[Any]]:
    import matplotlib.pyplot as plt

    cols = min(4, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.9 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def singular_value_curves(report: AnalysisReport, delta: bool = False) -> str:
    """σ_i/σ₁ against i, one panel per matrix type, one line per layer (colour = depth)."""
    import matplotlib.pyplot as plt

    rows, spectra = (report.delta_rows, report.delta_spectra) if delta else (report.rows, report.spectra)
    groups = _by_type(rows)
    fig, axes = _grid(len(groups))
    cmap = plt.get_cmap("viridis")
    for ax, (kind, items) in zip(axes, groups.items(), strict=True):
        depth = max((r["layer"] or 0 for r in items), default=0) or 1
        for r in items:
            s = spectra[r["name"]].double()
            top = float(s[0]) if s.numel() and float(s[0]) > 0 else 1.0
            ax.semilogy(range(1, s.numel() + 1), (s / top).clamp_min(1e-6).numpy(), lw=0.8,
                        color=cmap((r["layer"] or 0) / depth))
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("index i", fontsize=8)
        ax.set_ylabel("σ_i / σ₁", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.suptitle(("ΔW " if delta else "") + "singular values per matrix type (colour: layer, dark = first)",
                 fontsize=10)
    return _png(fig)


def effective_rank_heatmap(report: AnalysisReport) -> str:
    """Effective rank / min(m, n) for every (layer, matrix type) of the blocks."""
    import matplotlib.pyplot as plt
    import numpy as np

    block = [r for r in report.rows if r["layer"] is not None and r.get("effective_rank") is not None]
    types = list(dict.fromkeys(r["type"] for r in block))
    layers = sorted({r["layer"] for r in block})
    grid = np.full((len(layers), max(1, len(types))), np.nan)
    for r in block:
        grid[layers.index(r["layer"]), types.index(r["type"])] = r["effective_rank"] / min(r["rows"], r["cols"])
    fig, ax = plt.subplots(figsize=(1.1 * len(types) + 2.5, 0.22 * len(layers) + 1.8))
    image = ax.imshow(grid, aspect="auto", cmap="magma", vmin=0, vmax=1)
    ax.set_xticks(range(len(types)), types, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, label="effective rank / min(m, n)")
    ax.set_title("effective rank (layer × matrix type)", fontsize=10)
    return _png(fig)


def energy_curves(report: AnalysisReport) -> str:
    """Energy Σ_{i≤r}σ_i²/‖W‖²_F against r/k, one panel per type, one line per layer."""
    import matplotlib.pyplot as plt

    groups = _by_type(report.rows)
    fig, axes = _grid(len(groups))
    cmap = plt.get_cmap("viridis")
    for ax, (kind, items) in zip(axes, groups.items(), strict=True):
        depth = max((r["layer"] or 0 for r in items), default=0) or 1
        for r in items:
            sq = report.spectra[r["name"]].double().square()
            total = (r.get("frobenius_norm") or float(sq.sum()) ** 0.5) ** 2 or 1.0
            k = min(r["rows"], r["cols"])
            ax.plot([i / k for i in range(1, sq.numel() + 1)], (sq.cumsum(0) / total).numpy(), lw=0.8,
                    color=cmap((r["layer"] or 0) / depth))
        for level in (0.9, 0.99):
            ax.axhline(level, color="grey", lw=0.5, ls=":")
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("rank / min(m, n)", fontsize=8)
        ax.set_ylabel("energy kept", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.suptitle("energy curves (dotted: 90 % and 99 %)", fontsize=10)
    return _png(fig)


def _per_layer(ax: Any, rows: list[dict[str, Any]], column: str, marker: str = "o") -> bool:
    """One line per matrix type against depth; a type keeps its colour in every panel."""
    drawn = False
    groups = _by_type([r for r in rows if r.get("layer") is not None])
    for index, (kind, items) in enumerate(groups.items()):
        points = sorted((r["layer"], r[column]) for r in items if r.get(column) is not None)
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker=marker, ms=3, lw=1, label=kind, color=f"C{index % 10}")
            drawn = True
    return drawn


def alpha_per_layer(report: AnalysisReport) -> str:
    """α and FARMS α against depth, one line per type, the 2–6 band shaded."""
    import matplotlib.pyplot as plt

    from rankwise.analysis.report import ALPHA_BAND

    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), sharey=True)
    for ax, column, title in zip(axes, ("alpha", "farms_alpha"), ("power-law α (WeightWatcher definition)",
                                                                  "FARMS α (aspect-ratio corrected)"), strict=True):
        ax.axhspan(*ALPHA_BAND, color="tab:green", alpha=0.12, label="2 ≤ α ≤ 6")
        _per_layer(ax, report.rows, column)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylabel("α")
    axes[0].legend(fontsize=7, ncol=2)
    return _png(fig)


def delta_overview(report: AnalysisReport) -> str:
    """Top-k subspace overlap, intruder dimensions and ΔW effective rank against depth."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for ax, column, title in zip(axes, ("overlap", "intruders", "delta_effective_rank"),
                                 ("top-k subspace overlap W_ft vs W_base", "intruder dimensions",
                                  "effective rank of ΔW"), strict=True):
        _per_layer(ax, report.delta_rows, column)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7, ncol=2)
    return _png(fig)


def gradient_overview(report: AnalysisReport) -> str:
    """Gradient nuclear norm and effective rank against depth."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6))
    for ax, column, title in zip(axes, ("grad_nuclear_norm", "grad_effective_rank"),
                                 ("gradient nuclear norm", "gradient effective rank"), strict=True):
        _per_layer(ax, report.gradient_rows, column)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7, ncol=2)
    return _png(fig)


def figures(report: AnalysisReport) -> list[tuple[str, str, str]]:
    """(id, caption, base64 PNG) of every figure that applies to ``report``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    out = [
        ("alpha", "Heavy-tail α per layer: the shaded band 2–6 is where well-trained layers usually sit; "
                  "α above 6 suggests an under-trained (random-like) matrix, below 2 an over-fitted one.",
         alpha_per_layer(report)),
        ("effrank", "Effective rank relative to the largest possible rank: dark cells are compressible.",
         effective_rank_heatmap(report)),
        ("svcurves", "Normalised singular values: fast decay means a low-rank matrix.",
         singular_value_curves(report)),
        ("energy", "Energy retained by the best rank-r approximation.", energy_curves(report)),
    ]
    if report.delta_rows:
        out.append(("delta", "Fine-tuning delta: subspace overlap near 1 means the top directions were kept; "
                             "intruder dimensions are new directions absent from the base.", delta_overview(report)))
        out.append(("deltasv", "Singular values of ΔW = W_ft − W_base.", singular_value_curves(report, delta=True)))
    if report.gradient_rows:
        out.append(("grad", "Gradient of the LM loss: nuclear norm and effective rank per layer.",
                    gradient_overview(report)))
    return out
