"""The run folder of a training run and its hidden work folder (config + checkpoint until the end).

Nothing is created until every check has passed (`check_run_folder` only reads); the work folder
exists only for runs that really started, so a rejected command leaves nothing behind and the
corrected command is not refused as "interrupted".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from torch import nn

from rankwise.errors import RankwiseError
from rankwise.io.atomic import atomic_folder, check_output_folder
from rankwise.train.config import TrainConfig
from rankwise.train.trainable import Trainable

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


def check_run_folder(out: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse an output that may not be written, or a resume that cannot continue; writes nothing."""
    work = work_folder(out)
    if resume:
        if not (work / CONFIG_FILE).is_file():
            hint = " (it already finished)" if (out / REPORT_FILE).is_file() else ""
            raise RankwiseError(f"nothing to resume: no interrupted run for {out}{hint}")
        try:
            saved = type(config).model_validate(yaml.safe_load((work / CONFIG_FILE).read_text()))
        except (ValidationError, RankwiseError, yaml.YAMLError) as exc:
            first = str(exc).splitlines()[0]
            raise RankwiseError(f"cannot resume {out}: its saved config is invalid ({first})") from None
        old, new = saved.to_yaml_dict(), config.to_yaml_dict()
        for key in FREE_ON_RESUME:
            old.pop(key, None)
            new.pop(key, None)
        changes = _diff(old, new)
        if changes:
            raise RankwiseError(f"cannot resume {out} with a changed config ({'; '.join(changes[:3])}); "
                                "rerun with the original settings or start again with --overwrite")
        return
    check_output_folder(out, overwrite)
    if work.exists() and not overwrite:
        raise RankwiseError(f"an interrupted run of {out} exists; pass --resume to continue it "
                            "or --overwrite to start again")
    parent = out.parent if out.parent != Path("") else Path(".")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not _writable(existing):
        raise RankwiseError(f"cannot write {out}: {existing} is not a writable folder; choose another --out")


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


def create_work_folder(out: Path, config: TrainConfig, resume: bool) -> Path:
    """The work folder of a run that passed `check_run_folder`: created fresh (an old one is replaced,
    which only ``--overwrite`` allows), or the existing one when resuming."""
    work = work_folder(out)
    if resume:
        return work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / CONFIG_FILE).write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
    return work


def finish_run(out: Path, work: Path, trainable: Trainable, model: nn.Module, tokenizer: Any, config: TrainConfig,
               report: dict[str, Any], overwrite: bool) -> None:
    """Write the final run folder atomically, then drop the work folder."""
    with atomic_folder(out, overwrite=overwrite) as tmp:
        trainable.write_final(model, tokenizer, tmp)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
