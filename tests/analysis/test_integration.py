import numpy as np
import pytest

from rankwise.analysis import analyze
from rankwise.analysis.source import FolderSource
from rankwise.io import resolve_model_folder
from rankwise.linalg.powerlaw import fit_power_law


@pytest.mark.integration
def test_smollm2_first_block_alpha_matches_an_fp64_svd() -> None:
    folder = resolve_model_folder("smollm2-135m")
    report = analyze(str(folder), include=r"layers\.0\.", progress=False)
    assert len(report.table) == 7
    source = FolderSource(folder, include=r"layers\.0\.")
    for row in report.table:
        W = source.get(row["name"]).double().numpy()
        s = np.linalg.svd(W, compute_uv=False)
        ref = fit_power_law(s**2)
        assert ref is not None
        assert row["alpha"] == pytest.approx(ref.alpha, abs=0.01), row["name"]
        assert row["spectral_norm"] == pytest.approx(float(s[0]), rel=1e-4)
        assert 1 <= row["welore_rank"] <= min(W.shape)
