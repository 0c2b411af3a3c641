"""The run folder of a fine-tuning run and its hidden work folder (config + checkpoint until the end)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from torch import nn

from rankwise.adapters.run_io import write_adapter
from rankwise.adapters.train.config import FinetuneConfig
from rankwise.errors import RankwiseError
from rankwise.io.atomic import atomic_folder, check_output_folder

CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.json"
#: Settings a resumed run may change: they trade memory for time and leave every result bit the same.
FREE_ON_RESUME = ("checkpointing",)


def work_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key} {a!r} -> {b!r}")
    return changes


def prepare_work_folder(out: Path, config: FinetuneConfig, resume: bool, overwrite: bool) -> Path:
    """Check the output and create (or, with ``resume``, validate) the work folder; nothing is deleted
    unless ``overwrite``."""
    work = work_folder(out)
    text = yaml.safe_dump(config.to_yaml_dict(), sort_keys=False)
    if resume:
        if not (work / CONFIG_FILE).is_file():
            hint = " (it already finished)" if (out / REPORT_FILE).is_file() else ""
            raise RankwiseError(f"nothing to resume: no interrupted run for {out}{hint}")
        try:
            old = FinetuneConfig.model_validate(yaml.safe_load((work / CONFIG_FILE).read_text())).to_yaml_dict()
        except (ValidationError, RankwiseError) as exc:
            raise RankwiseError(f"cannot resume {out}: its saved config is invalid ({exc})") from None
        new = config.to_yaml_dict()
        for key in FREE_ON_RESUME:
            old.pop(key, None)
            new.pop(key, None)
        changes = _diff(old, new)
        if changes:
            raise RankwiseError(f"cannot resume {out} with a changed config ({'; '.join(changes[:3])}); "
                                "rerun with the original settings or start again with --overwrite")
        return work
    check_output_folder(out, overwrite)
    if work.exists():
        if not overwrite:
            raise RankwiseError(f"an interrupted run of {out} exists; pass --resume to continue it "
                                "or --overwrite to start again")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / CONFIG_FILE).write_text(text)
    return work


def finish_run(out: Path, work: Path, model: nn.Module, config: FinetuneConfig, report: dict[str, Any],
               overwrite: bool) -> None:
    """Write the final run folder atomically, then drop the work folder."""
    with atomic_folder(out, overwrite=overwrite) as tmp:
        write_adapter(model, tmp)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
