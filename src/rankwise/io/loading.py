"""`load_model`: a bundled name, a local HF folder, a GGUF file, or a hub id when online."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankwise.errors import RankwiseError
from rankwise.io.assets import SMOLLM2_PACKAGE, AssetPackage
from rankwise.io.hub import hub_reachable
from rankwise.io.quiet import quiet_transformers

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MANIFEST_NAME = "rankwise.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BundledModel:
    """A model shipped as a GGUF file inside an asset package."""

    name: str
    package: AssetPackage
    gguf_file: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel("smollm2-135m", SMOLLM2_PACKAGE, "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """``$RANKWISE_CACHE``, else ``$XDG_CACHE_HOME/rankwise``, else ``~/.cache/rankwise``."""
    if os.environ.get("RANKWISE_CACHE"):
        return Path(os.environ["RANKWISE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rankwise"


def _gguf_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / f"{gguf.stem}-{key}"


def cached_gguf_folder(gguf: Path) -> Path:
    """The safetensors HF folder converted from ``gguf``; converts it once, atomically."""
    target = _gguf_cache_folder(gguf)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    print(f"rankwise: converting {gguf.name} once to safetensors in {target} ...", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are now dequantised fp32: the folder is an ordinary dense model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST_NAME).write_text(json.dumps({"source_gguf": str(gguf)}, indent=2))
        if not target.exists():  # another process may have finished first; its copy is as good
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_folder(spec: str) -> Path | str:
    """Map a model spec to a local HF folder (converting GGUF once), or return a hub id."""
    if spec in BUNDLED_MODELS:
        bundled = BUNDLED_MODELS[spec]
        return cached_gguf_folder(bundled.package.file(bundled.gguf_file))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RankwiseError(f"{path} is a folder but not a model folder (no config.json); "
                                f"pass a Hugging Face model folder, a .gguf file or one of: {_bundled_list()}")
        return path
    if path.is_file():
        if path.suffix != ".gguf":
            raise RankwiseError(f"{path} is a file but not a .gguf model; pass a .gguf file or a model folder")
        return cached_gguf_folder(path)
    if spec.endswith(".gguf") or spec.startswith((".", "/", "~")) or (os.sep in spec and not _HUB_ID.match(spec)):
        raise RankwiseError(f"no such file or folder: {spec}")
    if _HUB_ID.match(spec):
        if not hub_reachable():
            raise RankwiseError(f"'{spec}' looks like a Hugging Face Hub id, but the hub is unreachable "
                                f"(offline); pass a local model folder, a .gguf file or one of: {_bundled_list()}")
        return spec
    raise RankwiseError(f"unknown model '{spec}'; bundled models: {_bundled_list()} "
                        "(or pass a local model folder or a .gguf file)")


def _bundled_list() -> str:
    return ", ".join(sorted(BUNDLED_MODELS))


def read_manifest(folder: Path | str) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def load_model(
    spec: str | os.PathLike[str] = DEFAULT_MODEL, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in eval mode on CPU.

    ``spec``: a bundled name (``"smollm2-135m"``), a local HF folder (also rankwise's compressed
    folders), a ``.gguf`` file, or a hub id when the hub is reachable. ``dtype`` defaults to fp32.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    where = resolve_model_folder(str(spec))
    dtype = dtype or torch.float32
    manifest = read_manifest(where) if isinstance(where, Path) else {}
    if manifest.get("rank_map"):
        from rankwise.modules.lowrank_io import load_lowrank_model

        model = load_lowrank_model(Path(where), manifest, dtype)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RankwiseError(f"could not load a causal LM from {where}: {first}") from exc
    tokenizer = AutoTokenizer.from_pretrained(where)
    model.eval()  # type: ignore[no-untyped-call]
    return model, tokenizer
