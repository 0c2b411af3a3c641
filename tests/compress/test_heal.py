"""Healing: the chunked KL against autograd, a short run lowers it, divergence restores the weights."""

import copy
from pathlib import Path

import pytest
import torch

import rankwise as rw
from rankwise.compress.heal import distillation_loss, heal_parameters
from tests.conftest import tiny_llama


def _compressed(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    dense = tiny_llama(seed=seed)
    with torch.no_grad():  # peaked next-token distributions, as a trained model has, so the KL is not tiny
        dense.lm_head.weight.mul_(30.0)
    student = copy.deepcopy(dense)
    calib = torch.randint(0, 128, (16, 24), generator=torch.Generator().manual_seed(1))
    rw.compress.apply(student, rw.compress.SVDLLM(ratio=0.5, rank_multiple=2, alloc="uniform"), calib=calib,
                      batch_size=4, progress=False)
    return student, dense, calib


def test_chunked_kl_and_its_gradient_match_autograd() -> None:
    student, dense, calib = _compressed()
    batch = calib[:2]
    for p in heal_parameters(student, norms=False).values():
        p.requires_grad_(True)
    loss, n = distillation_loss(student, dense, batch, chunk=7)
    loss.backward()
    got = {name: p.grad.clone() for name, p in heal_parameters(student, False).items()}  # type: ignore[union-attr]
    student.zero_grad()
    logits_s = student(batch).logits[:, :-1].reshape(n, -1)
    with torch.no_grad():
        logits_t = dense(batch).logits[:, :-1].reshape(n, -1)
    ref = torch.nn.functional.kl_div(logits_s.log_softmax(-1), logits_t.log_softmax(-1), log_target=True,
                                     reduction="sum")
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-4)
    for name, p in heal_parameters(student, False).items():
        scale = float(p.grad.abs().max())  # type: ignore[union-attr]
        torch.testing.assert_close(got[name], p.grad, rtol=1e-3, atol=1e-3 * scale)


def test_healing_lowers_the_kl_and_the_result_still_loads(tmp_path: Path) -> None:
    student, dense, calib = _compressed()
    frozen = {n: p.clone() for n, p in student.named_parameters() if n.endswith("embed_tokens.weight")}
    flags = {n: p.requires_grad for n, p in student.named_parameters()}
    report = rw.compress.heal(student, dense, calib, steps=30, lr=1e-3, progress=False)
    assert report.diverged is None and report.steps == 30
    assert report.losses[-1] < 0.7 * report.losses[0]
    for n, p in student.named_parameters():
        assert p.requires_grad == flags[n]  # restored
        if n in frozen:
            assert torch.equal(p, frozen[n])  # only the factors train
    cr = rw.compress.apply(copy.deepcopy(dense), rw.compress.SVDLLM(ratio=0.5, rank_multiple=2, alloc="uniform"),
                           calib=calib, batch_size=4, progress=False)
    from rankwise.data.windows import _default_tokenizer

    folder = rw.compress.save_compressed(student, _default_tokenizer(), tmp_path / "healed", cr)
    loaded, _ = rw.load_model(str(folder))
    with torch.no_grad():
        assert torch.equal(student(calib[:2]).logits, loaded(calib[:2]).logits)


def test_divergence_keeps_the_unhealed_model_and_says_so() -> None:
    student, dense, calib = _compressed()
    before = {n: p.clone() for n, p in student.named_parameters()}
    report = rw.compress.heal(student, dense, calib, steps=40, lr=5.0, patience=3, progress=False)
    assert report.diverged is not None and "unhealed model is kept" in report.line()
    for n, p in student.named_parameters():
        assert torch.equal(p, before[n])


def test_healing_an_uncompressed_model_fails_clearly() -> None:
    model = tiny_llama()
    with pytest.raises(rw.RankwiseError, match="no low-rank layers to heal; compress it first"):
        rw.compress.heal(model, tiny_llama(), torch.randint(0, 128, (2, 8)), steps=2, progress=False)


def _cli_compress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *options: str) -> list[str]:
    """`rankwise compress` arguments for a tiny model saved under ``tmp_path`` (no --out), with ``options``."""
    from rankwise.data.windows import _default_tokenizer
    from rankwise.io import save_model

    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tiny"
    save_model(tiny_llama(seed=0, vocab=49152), _default_tokenizer(), folder)
    return ["compress", str(folder), "--calib", "tinystories", "--calib-windows", "8", "--seq-len", "32", "--no-speed",
            "--rank-multiple", "2", "--ratio", "0.3", *options]


def test_cli_heal_and_cache_say_what_they_did(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from rankwise.cli.main import main

    args = _cli_compress(tmp_path, monkeypatch, "--eval", "wiki", "--eval-tokens", "64", "--heal-steps", "3")
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    assert "healing: 3 steps" in first and "from the cache" not in first
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["healing"]["steps"] == 3 and report["evaluation_from_cache"] == []
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # same inputs: same bytes, figures from the cache
    second = capsys.readouterr().out
    assert "from the cache (same weights and windows as an earlier run): ppl_wiki_after, ppl_wiki_before" in second
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_interrupted_healing_resumes_to_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rankwise.compress.heal import checkpoint_interval
    from rankwise.train.run_folder import work_folder
    from tests.train.interrupt import ctrl_c_at_step

    assert checkpoint_interval(6) == 2  # so step 5 resumes from the checkpoint of step 4
    whole, dense, calib = _compressed()
    interrupted = copy.deepcopy(whole)
    full = rw.compress.heal(whole, dense, calib, steps=6, lr=1e-3, progress=False, run_dir=tmp_path / "a")
    assert not list(tmp_path.iterdir())  # nothing is left once healing ends
    with ctrl_c_at_step(monkeypatch, 5):
        rw.compress.heal(interrupted, dense, calib, steps=6, lr=1e-3, progress=False, run_dir=tmp_path / "b")
    assert work_folder(tmp_path / "b").is_dir()
    with pytest.raises(rw.RankwiseError, match=r"changed config \(lr 0.001 -> 0.002\)"):
        rw.compress.heal(interrupted, dense, calib, steps=6, lr=2e-3, progress=False, run_dir=tmp_path / "b",
                         resume=True)
    resumed = rw.compress.heal(interrupted, dense, calib, steps=6, lr=1e-3, progress=False, run_dir=tmp_path / "b",
                               resume=True)
    assert resumed.losses == full.losses and resumed.steps == 6
    for (name, a), (_, b) in zip(whole.state_dict().items(), interrupted.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not list(tmp_path.iterdir())


def test_cli_healing_interrupted_says_how_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from rankwise.cli.main import main
    from tests.train.interrupt import interrupt_at_step

    args = _cli_compress(tmp_path, monkeypatch, "--eval", "none", "--heal-steps", "8")
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "out" / "smol"
    assert main([*args, "--resume", "--out", str(out)]) == 2
    assert f"nothing to resume: no interrupted healing run for {out}" in capsys.readouterr().err
    restore = interrupt_at_step(monkeypatch, 6)
    assert main([*args, "--out", str(out)]) == 130
    progress = out.parent / ".smol.heal.partial"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"rankwise: interrupted; no output was written; healing progress kept in {progress}; run the same command "
        "with --resume to continue")
    assert sorted(p.name for p in out.parent.iterdir()) == [".smol.heal.partial"]
    restore()
    assert main([*args, "--resume", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["smol"]
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "whole" / name).read_bytes() == (out / name).read_bytes()
