"""`save_model`: safetensors + config + tokenizer + a rankwise.json manifest, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankwise._version import __version__
from rankwise.io.atomic import atomic_folder
from rankwise.io.loading import MANIFEST_NAME

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def manifest_json(produced_by: str, extra: dict[str, Any] | None = None) -> str:
    """The manifest text. No timestamps: same inputs must give a byte-identical folder."""
    body: dict[str, Any] = {"rankwise_version": __version__, "produced_by": produced_by}
    body.update(extra or {})
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    folder: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    produced_by: str = "rankwise.save_model",
    manifest: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and ``tokenizer``) as an HF folder; refuses an existing folder unless ``overwrite``."""
    with atomic_folder(folder, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST_NAME).write_text(manifest_json(produced_by, manifest))
    return Path(folder)
