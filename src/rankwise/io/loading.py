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
from rankwise.io.atomic import make_files_readable
from rankwise.io.hub import hub_reachable
from rankwise.io.quiet import quiet_transformers

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MANIFEST_NAME = "rankwise.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_KEY_BYTES = 2**20


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


def gguf_content_key(gguf: Path) -> str:
    """A key for the file's content: its size and a hash of its first and last MiB.

    Not its path: the bundled file lies inside each clone's ``.venv``, and a path key made every fresh
    clone convert again. The ends hold the header (tensor names, shapes, metadata) and the last
    tensor's bytes, so a different file gives a different key without hashing the whole file.
    """
    size = gguf.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(gguf, "rb") as fh:
        digest.update(fh.read(_KEY_BYTES))
        fh.seek(max(size - _KEY_BYTES, 0))
        digest.update(fh.read(_KEY_BYTES))
    return digest.hexdigest()[:16]


def _gguf_cache_folder(gguf: Path) -> Path:
    return cache_dir() / f"{gguf.stem}-{gguf_content_key(gguf)}"


def check_gguf_file(gguf: Path) -> None:
    """A ``.gguf`` name is not enough: the file must start with the GGUF magic bytes."""
    with open(gguf, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise RankwiseError(f"{gguf} is not a GGUF file (it does not start with the bytes 'GGUF'); "
                            "pass a valid .gguf file or a Hugging Face model folder")


def _readable_gguf(gguf: Path) -> None:
    """Parse the whole GGUF index (metadata, tensor table, data extents) before announcing a conversion."""
    import gguf as gguf_lib

    try:
        gguf_lib.GGUFReader(gguf)
    except Exception as exc:  # the reader reports a truncated file as ValueError, IndexError, ...
        raise RankwiseError(f"could not convert {gguf}: it is truncated or corrupt ({_first_line(exc)}); "
                            "re-download it, or pass a Hugging Face model folder") from None


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise ``gguf`` into an HF folder (safetensors + config + tokenizer) at ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # a truncated or unsupported GGUF fails anywhere inside the gguf reader
        raise RankwiseError(f"could not convert {gguf}: {_first_line(exc)}; pass an intact .gguf file "
                            "of a supported architecture, or a Hugging Face model folder") from exc
    # The weights are now dequantised fp32: the folder is an ordinary dense model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps({"source_gguf": gguf.name}, indent=2))


def cached_gguf_folder(gguf: Path) -> Path:
    """The safetensors HF folder converted from ``gguf``; converts it once (per content), atomically."""
    check_gguf_file(gguf)
    target = _gguf_cache_folder(gguf)
    if (target / "config.json").is_file():
        return target
    _readable_gguf(gguf)
    quiet_transformers()
    print(f"rankwise: converting {gguf.name} once to safetensors in {target} ...", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _convert_gguf(gguf, tmp)
        make_files_readable(tmp)
        if not target.exists():  # another process may have finished first; its copy is as good
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_folder(spec: str) -> Path | str:
    """Map a model spec to a local HF folder (converting GGUF once), or return a hub id.

    A local folder is checked before anything reads it (`check_model_folder`): pickle-only weights
    are refused, and a truncated or corrupt safetensors file fails here in one line.
    """
    if spec in BUNDLED_MODELS:
        bundled = BUNDLED_MODELS[spec]
        return check_model_folder(cached_gguf_folder(bundled.package.file(bundled.gguf_file)))
    path = Path(spec).expanduser()
    if path.is_dir():
        return check_model_folder(path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise RankwiseError(f"{path} is a file but not a .gguf model; pass a .gguf file or a model folder")
        return check_model_folder(cached_gguf_folder(path))
    if spec.endswith(".gguf") or spec.startswith((".", "/", "~")) or (os.sep in spec and not _HUB_ID.match(spec)):
        raise RankwiseError(f"no such file or folder: {spec}; pass a model folder, a .gguf file or one of: "
                            f"{_bundled_list()}")
    if _HUB_ID.match(spec):
        if not hub_reachable():
            raise RankwiseError(f"'{spec}' looks like a Hugging Face Hub id, but the hub is unreachable "
                                f"(offline); pass a local model folder, a .gguf file or one of: {_bundled_list()}")
        return spec
    raise RankwiseError(f"unknown model '{spec}'; bundled models: {_bundled_list()} "
                        "(or pass a local model folder or a .gguf file)")


def check_model_folder(folder: Path) -> Path:
    """``folder`` if it is a model folder rankwise can read safely; else a one-line RankwiseError.

    Reads only config.json and the safetensors headers (`io.tensors.check_safetensors_folder`): a
    truncated or corrupt file fails here, and a folder whose weights exist only as pickles
    (``pytorch_model.bin``) is refused, since loading those means unpickling, which can run code.
    """
    from rankwise.io.tensors import check_safetensors_folder

    config = folder / "config.json"
    if not config.is_file():
        raise RankwiseError(f"{folder} is a folder but not a model folder (no config.json); "
                            f"pass a Hugging Face model folder, a .gguf file or one of: {_bundled_list()}")
    read_json_file(config, "re-save the model or restore its config.json")
    check_safetensors_folder(folder)
    return folder


def read_json_file(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``; a file that is not one is a one-line error ending in ``fix``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        raise RankwiseError(f"{path} is not a valid JSON object; {fix}")
    return data


def model_config(spec: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of a model spec without loading the model ({} for a hub id).

    Lets commands check settings against the model (``--seq-len`` against the context length)
    before the slow load.
    """
    where = resolve_model_folder(str(spec))
    if not isinstance(where, Path):
        return {}
    return read_json_file(where / "config.json", "re-save the model or restore its config.json")


def check_seq_len(config: dict[str, Any], seq_len: int, option: str = "--seq-len") -> None:
    """Refuse windows longer than the model's context (``max_position_embeddings``)."""
    limit = config.get("max_position_embeddings")
    if isinstance(limit, int) and seq_len > limit:
        raise RankwiseError(f"{option} {seq_len} is longer than the model's context of {limit} tokens "
                            f"(max_position_embeddings); pass {option} {limit} or less")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bundled_list() -> str:
    return ", ".join(sorted(BUNDLED_MODELS))


def read_manifest(folder: Path | str) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return {}
    return read_json_file(path, "re-save the model (the rankwise.json manifest is corrupt)")


def load_model(
    spec: str | os.PathLike[str] = DEFAULT_MODEL, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in eval mode on CPU.

    ``spec``: a bundled name (``"smollm2-135m"``), a local HF folder (also rankwise's compressed
    folders), a ``.gguf`` file, or a hub id when the hub is reachable. ``dtype`` defaults to fp32.
    """
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    where = resolve_model_folder(str(spec))
    dtype = dtype or torch.float32
    manifest = read_manifest(where) if isinstance(where, Path) else {}
    tokenizer = load_tokenizer(where)  # first: it is fast, and a folder without one fails before the weights load
    if manifest.get("rank_map"):
        from rankwise.modules.lowrank_io import load_lowrank_model

        model = load_lowrank_model(Path(where), manifest, dtype)
    else:
        try:
            # use_safetensors: never fall back to a pickled checkpoint (a hub repo may hold both).
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, use_safetensors=True)
        except (OSError, ValueError, KeyError) as exc:
            raise RankwiseError(f"could not load a causal LM from {where}: {_first_line(exc)}") from exc
    model.eval()  # type: ignore[no-untyped-call]
    return model, tokenizer


def load_tokenizer(where: Path | str) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a model (folder or hub id); a one-line error if there is none."""
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RankwiseError(f"could not load the tokenizer of {where}: {_first_line(exc)}; save the "
                            "tokenizer into the model folder (tokenizer.save_pretrained)") from exc
    return tokenizer
