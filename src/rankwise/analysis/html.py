"""The self-contained HTML page of a report: plots as data URIs, sortable tables, no CDN, no server."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rankwise.analysis.report import AnalysisReport

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem auto;max-width:1400px;color:#222;
padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9rem}
table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4;cursor:pointer;user-select:none;position:sticky;top:0}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
.out{background:#fde2e2}.wrap{max-height:600px;overflow:auto}
dl{font-size:.85rem}dt{font-weight:600;margin-top:.4rem}.meta{color:#555;font-size:.9rem}
"""

# Click a header to sort by that column (numbers numerically, empty cells last); click again to reverse.
_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],i=[].indexOf.call(th.parentNode.children,th),asc=!th.classList.contains('asc');
t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});th.classList.add(asc?'asc':'desc');
function v(r){var x=r.children[i].getAttribute('data-v');return x===''?null:(isNaN(+x)?x:+x)}
[].slice.call(b.rows).sort(function(p,q){var a=v(p),c=v(q);if(a===null)return 1;if(c===null)return -1;
return (a<c?-1:a>c?1:0)*(asc?1:-1)}).forEach(function(r){b.appendChild(r)})})});
"""


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return str(value)


def _table(rows: list[dict[str, Any]], table_id: str, alpha_band: tuple[float, float] | None = None) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            out = alpha_band and c in ("alpha", "farms_alpha") and isinstance(v, float) and \
                not alpha_band[0] <= v <= alpha_band[1]
            raw = "" if v is None or (isinstance(v, float) and v != v) else str(v)
            cls = ' class="out"' if out else ""
            cells.append(f'<td data-v="{html.escape(raw)}"{cls}>{html.escape(_fmt(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="wrap"><table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def render(report: AnalysisReport) -> str:
    """The whole page as one string."""
    from rankwise.analysis.plots import figures
    from rankwise.analysis.report import ALPHA_BAND

    meta = report.meta
    title = f"rankwise analyze: {meta.get('model', '')}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    facts = [f"{len(report.rows)} matrices", f"{meta.get('seconds', '?')} s"]
    if meta.get("against"):
        facts.append(f"delta against {meta['against']}")
    if meta.get("welore_tau") is not None:
        facts.append(f"WeLore threshold τ = {meta['welore_tau']:.4g} for "
                     f"{meta['config']['welore_ratio']:.0%} of parameters removed")
    parts.append(f"<p class=\"meta\">{html.escape(' · '.join(facts))}</p>")
    parts.append("<h2>Summary by matrix type</h2>" + _table(report.summary(), "summary"))
    parts.append("<h2>Plots</h2>")
    for fig_id, caption, png in figures(report):
        parts.append(f'<figure id="fig-{fig_id}"><img alt="{html.escape(fig_id)}" src="data:image/png;base64,{png}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>All matrices</h2><p class=\"meta\">Click a column header to sort. α outside 2–6 is "
                 "highlighted.</p>" + _table(report.rows, "matrices", ALPHA_BAND))
    if report.delta_rows:
        parts.append("<h2>Fine-tuning delta ΔW = W_ft − W_base</h2>" + _table(report.delta_rows, "delta"))
    if report.gradient_rows:
        parts.append("<h2>Gradients</h2>" + _table(report.gradient_rows, "gradients"))
    parts.append("<h2>Definitions</h2><dl>" + "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in report.definitions.items()) + "</dl>")
    config = json.dumps(meta.get("config", {}), indent=1)
    parts.append(f"<h2>Configuration</h2><pre>{html.escape(config)}</pre>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "".join(parts)
