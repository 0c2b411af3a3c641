"""The HTML report in a real browser: headless Chromium renders it, every plot loads, the page is not blank."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from rankwise.analysis import analyze

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Appended to a copy of the page: after load, record how many <img> decoded (naturalWidth > 0).
_PROBE = """<script>window.addEventListener('load',function(){var i=[].slice.call(document.images);
var ok=i.filter(function(x){return x.complete&&x.naturalWidth>0}).length;
document.body.setAttribute('data-probe','images '+ok+'/'+i.length);});</script>"""


def _find_or_install_chromium() -> str | None:
    for name in _BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run([apt, "install", "-y", "-q", "chromium"], capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        return shutil.which("chromium")
    return None


def _chromium(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=180)


def test_report_renders_in_headless_chromium(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    binary = _find_or_install_chromium()
    if binary is None:
        pytest.skip("headless Chromium is not installed and could not be installed (needs root and "
                    "apt-get install chromium); the HTML report was not checked in a browser")
    tokens = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    other = tmp_path / "ft"
    with torch.no_grad():
        ft = type(tiny_model)(tiny_model.config)
        ft.load_state_dict(tiny_model.state_dict())
        ft.model.layers[0].self_attn.q_proj.weight += 0.5
    ft.save_pretrained(other)
    base = tmp_path / "base"
    tiny_model.save_pretrained(base)
    report = analyze(str(other), against=str(base), progress=False)
    report.gradient_rows = analyze(tiny_model, tokens=tokens, progress=False).gradient_rows
    folder = report.save(tmp_path / "report")
    page = (folder / "index.html").read_text()
    n_images = page.count("<img ")
    assert n_images == 7  # α, effective rank, σ curves, energy, delta overview, ΔW σ curves, gradients
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _PROBE + "</body>"))

    dom = _chromium(binary, "--dump-dom", probe.as_uri())
    match = re.search(r'data-probe="images (\d+)/(\d+)"', dom.stdout)
    assert match, f"the page did not finish loading in Chromium: {dom.stderr[-500:]}"
    assert match.groups() == (str(n_images), str(n_images)), "some plot images did not load"
    assert "All matrices" in dom.stdout and "<table" in dom.stdout

    shot = tmp_path / "shot.png"
    _chromium(binary, f"--screenshot={shot}", "--window-size=1280,2400", (folder / "index.html").as_uri())
    assert shot.is_file(), "Chromium wrote no screenshot"
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]  # [H, W, 3] floats in [0, 1]
    not_white = (pixels < 0.92).any(axis=-1).mean()
    assert pixels.std() > 0.05 and not_white > 0.05, f"the screenshot looks blank ({not_white:.1%} inked)"
