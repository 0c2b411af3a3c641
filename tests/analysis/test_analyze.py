import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rankwise as rw
from rankwise.analysis import METRICS, AnalyzeConfig, analyze
from rankwise.analysis.metrics import register_metric
from rankwise.cli.main import main
from rankwise.errors import RankwiseError
from tests.analysis.conftest import perturbed_folder
from tests.conftest import tiny_llama


def test_every_metric_is_documented_and_produces_its_columns(tiny_model: torch.nn.Module) -> None:
    report = rw.analyze(tiny_model, progress=False)
    assert len(report.table) == 16
    for name in METRICS:
        assert report.definitions[name]
    row = report.table[0]
    for column in ("spectral_norm", "frobenius_norm", "nuclear_norm", "stable_rank", "effective_rank",
                   "rank_90", "rank_95", "rank_99", "alpha", "alpha_D", "farms_alpha", "welore_rank"):
        assert column in row, column
    by_name = {r["name"]: r for r in report.table}
    assert by_name["model.embed_tokens.weight"]["welore_rank"] is None  # WeLore ranks the blocks only
    assert all(1 <= r["welore_rank"] <= min(r["rows"], r["cols"]) for r in report.table if r["layer"] is not None)
    with pytest.raises(ValueError, match="registered twice"):
        register_metric("alpha", "again")(lambda spec: {})


def test_metrics_of_a_planted_low_rank_matrix() -> None:
    model = tiny_llama()
    torch.manual_seed(3)
    with torch.no_grad():
        W = model.model.layers[0].mlp.up_proj.weight  # [64, 32]
        W.copy_(torch.randn(64, 3) @ torch.randn(3, 32))
    report = analyze(model, include=r"layers\.0\.mlp\.up_proj", progress=False)
    (row,) = report.table
    s = torch.linalg.svdvals(W.detach().double())
    assert row["spectral_norm"] == pytest.approx(float(s[0]), rel=1e-5)
    assert row["frobenius_norm"] == pytest.approx(float(s.norm()), rel=1e-6)
    assert row["stable_rank"] == pytest.approx(float(s.square().sum() / s[0] ** 2), rel=1e-5)
    assert row["rank_99"] <= 3 and row["effective_rank"] <= 3.0
    # Alone, the matrix takes the whole WeLore budget: the largest r with r(m + n) <= 0.5·mn.
    assert row["welore_rank"] == 2048 // 2 // 96


def test_fast_mode_uses_top_k_and_stays_close(tiny_model: torch.nn.Module) -> None:
    exact = analyze(tiny_model, progress=False).table
    fast = analyze(tiny_model, fast=True, fast_rank=8, progress=False).table
    assert all(r["farms_alpha"] is None for r in fast)
    for e, f in zip(exact, fast, strict=True):
        assert f["spectral_norm"] == pytest.approx(e["spectral_norm"], rel=1e-3)
        assert f["stable_rank"] == pytest.approx(e["stable_rank"], rel=1e-3)
        assert f["nuclear_norm"] <= e["nuclear_norm"] * (1 + 1e-6)


def test_fast_mode_leaves_welore_undetermined_when_its_top_k_is_too_short(tiny_model: torch.nn.Module) -> None:
    exact = analyze(tiny_model, progress=False)
    assert max(r["welore_rank"] or 0 for r in exact.table) > 4  # WeLore needs more than 4 values somewhere
    short = analyze(tiny_model, fast=True, fast_rank=4, progress=False)
    assert short.meta["welore_tau"] is None
    assert all(r["welore_rank"] is None for r in short.table)  # not "keep all 4": that is no recommendation


def test_folder_and_model_give_the_same_report(tiny_folder: Path) -> None:
    a = analyze(tiny_llama(), progress=False).table
    b = analyze(str(tiny_folder), progress=False, workers=1).table
    by_name = {r["name"]: r for r in b}
    for row in a:
        other = by_name[row["name"]]
        for key, value in row.items():
            assert other[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), key


def test_report_json_csv_and_folder(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    report = analyze(tiny_model, progress=False)
    payload = json.loads(report.to_json())
    assert payload["matrices"][0]["name"] == report.table[0]["name"]
    assert {s["type"] for s in payload["summary"]} >= {"self_attn.q_proj", "mlp.down_proj", "embed_tokens"}
    assert payload["definitions"]["welore_rank"].startswith("WeLore")
    csv_lines = report.to_csv().splitlines()
    assert len(csv_lines) == 1 + len(report.table) and csv_lines[0].startswith("name,layer,type,rows,cols")
    out = report.save(tmp_path / "rep")
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "matrices.csv", "spectra.safetensors",
                                                     "summary.json"]
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "http://" not in page and "https://" not in page
    with pytest.raises(RankwiseError, match="already exists"):
        report.save(out)


def test_nothing_is_written_when_rendering_fails(tiny_model: torch.nn.Module, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    report = analyze(tiny_model, progress=False)

    def boom(_: object) -> str:
        raise RuntimeError("plotting failed")

    monkeypatch.setattr("rankwise.analysis.html.render", boom)
    with pytest.raises(RuntimeError):
        report.save(tmp_path / "rep")
    assert list(tmp_path.iterdir()) == []


def test_delta_mode_finds_the_planted_update(tmp_path: Path) -> None:
    base = tmp_path / "base"
    tiny_llama().save_pretrained(base)
    ft = perturbed_folder(tiny_llama(), tmp_path / "ft", scale=3.0)
    report = analyze(str(ft), against=str(base), overlap_k=4, progress=False)
    rows = {r["name"]: r for r in report.delta_rows}
    assert len(rows) == 16
    q = rows["model.layers.0.self_attn.q_proj.weight"]
    assert q["delta_rank_90"] <= 2 and q["delta_effective_rank"] <= 2.0
    assert q["intruders"] >= 1 and q["overlap"] < 0.99
    k = rows["model.layers.0.self_attn.k_proj.weight"]
    assert k["delta_frobenius_norm"] == 0.0 and k["intruders"] == 0 and k["overlap"] == pytest.approx(1.0, abs=1e-5)
    assert "intruders" in report.definitions and report.to_csv("delta").count("\n") == 17


def test_delta_mode_lists_mismatches(tmp_path: Path) -> None:
    base = tmp_path / "base"
    tiny_llama().save_pretrained(base)
    other = tmp_path / "other"
    tiny_llama(hidden=48).save_pretrained(other)
    with pytest.raises(RankwiseError, match=r"shape mismatch: .*48") as exc:
        analyze(str(other), against=str(base), progress=False)
    assert "\n" not in str(exc.value)
    three = tmp_path / "three"
    tiny_llama(layers=3).save_pretrained(three)
    with pytest.raises(RankwiseError, match=r"only in the model: model\.layers\.2\."):
        analyze(str(three), against=str(base), progress=False)


def test_gradient_mode_on_given_tokens(tiny_model: torch.nn.Module) -> None:
    tokens = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    before = {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    report = analyze(tiny_model, tokens=tokens, batch_size=3, progress=False)
    assert len(report.gradient_rows) == 14  # every block linear, not the head
    for row in report.gradient_rows:
        assert row["grad_nuclear_norm"] > 0 and 0 < row["grad_effective_rank"] <= 32
    assert {n: p.requires_grad for n, p in tiny_model.named_parameters()} == before
    assert all(p.grad is None for p in tiny_model.parameters())
    # Accumulating over batches gives the gradient of the mean loss over all windows.
    one = analyze(tiny_model, tokens=tokens, batch_size=4, progress=False)
    for a, b in zip(report.gradient_rows, one.gradient_rows, strict=True):
        assert a["grad_nuclear_norm"] == pytest.approx(b["grad_nuclear_norm"], rel=1e-4)


def test_config_rejects_unknown_fields_and_metrics(tiny_model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="extra"):
        AnalyzeConfig(bogus=1)  # type: ignore[call-arg]
    with pytest.raises(RankwiseError, match="unknown metric"):
        analyze(tiny_model, metrics=["alpha", "nope"], progress=False)
    only = analyze(tiny_model, metrics=["stable_rank"], progress=False).table[0]
    assert "stable_rank" in only and "alpha" not in only


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rankwise.cli.main", "analyze", *args], capture_output=True,
                          text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                          "PYTHONPATH": ":".join(sys.path)}, timeout=120)


def test_cli_writes_the_report_and_prints_the_table(tiny_folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["analyze", str(tiny_folder), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "self_attn.q_proj" in text and "alpha" in text and "wrote" in text
    assert (out / "index.html").is_file() and (out / "summary.json").is_file()
    assert main(["analyze", str(tiny_folder), "--json", "--no-progress", "--include", "k_proj",
                 "--metrics", "alpha,stable_rank"]) == 0
    matrices = json.loads(capsys.readouterr().out)["matrices"]
    assert len(matrices) == 2 and "alpha" in matrices[0] and "farms_alpha" not in matrices[0]


@pytest.mark.parametrize("case", ["not_model", "mismatch", "truncated", "exists"])
def test_cli_errors_are_one_line_exit_2_and_write_nothing(case: str, tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = [str(tiny_folder), "--out", str(out), "--no-progress"]
    expected = {"not_model": "not a model folder", "mismatch": "do not have the same matrices",
                "truncated": "is truncated", "exists": "already exists"}[case]
    if case == "not_model":
        args[0] = str(tmp_path)
    elif case == "mismatch":
        other = tmp_path / "other"
        tiny_llama(layers=1).save_pretrained(other)
        args += ["--against", str(other)]
    elif case == "truncated":
        weights = tiny_folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-64])
    else:
        out.mkdir()
    proc = _cli(*args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("rankwise: error:") and expected in lines[0]
    assert (case == "exists") == out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]
