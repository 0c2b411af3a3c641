"""The merge config: mergekit's YAML (the subset both tools share) as a pydantic model.

A parameter may be written the three ways mergekit accepts: a scalar; a list of numbers interpolated
across the layers (a "gradient": layer i of L uses position t = i / (L - 1), tensors outside the layers
use t = 0); or a list of ``{filter, value}`` entries, the first whose ``filter`` is a substring of the
tensor name (or has no filter, or ``"*"``) giving the value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rankwise.errors import RankwiseError

Scalar = float | int | bool | str


class Conditional(BaseModel):
    """``{filter: "self_attn", value: 0.3}``: the value for tensors whose name contains ``filter``."""

    model_config = ConfigDict(extra="forbid")

    value: Scalar | list[Scalar]
    filter: str | None = None


Setting = Scalar | list[Scalar] | Conditional | list[Conditional]


class InputModel(BaseModel):
    """One ``models:`` entry: a model folder, bundled name, ``.gguf`` file or adapter, and its parameters."""

    model_config = ConfigDict(extra="forbid")

    model: str
    parameters: dict[str, Setting] | None = None


class MergeConfig(BaseModel):
    """What to merge and how (mergekit's format).

    ``output: adapter`` merges adapters of one base into an adapter (factored form) instead of a
    model folder. ``seed`` drives the random drops of DARE. ``out_shard_size`` is bytes per output shard.
    """

    model_config = ConfigDict(extra="forbid")

    merge_method: str
    models: list[InputModel] = Field(min_length=1)
    base_model: str | None = None
    parameters: dict[str, Setting] | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    output: Literal["model", "adapter"] = "model"
    seed: int = 0
    out_shard_size: int = Field(2 * 2**30, gt=0)
    # Calibration for data-aware methods (regmean).
    calib_data: str = "wiki"
    calib_windows: int = Field(32, gt=0)
    calib_seq_len: int = Field(256, gt=0)




def parse_config(data: Any, where: str = "the merge config") -> MergeConfig:
    """Validate a config dict; any problem is one line naming the field."""
    if not isinstance(data, dict):
        raise RankwiseError(f"{where} must be a YAML mapping with merge_method and models")
    for key in ("slices", "modules"):
        if key in data:
            raise RankwiseError(f"{where}: unknown field '{key}'; rankwise merges whole models: replace '{key}' "
                                "by a 'models' list")
    try:
        return MergeConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[")))
        field = field or "config"
        if err["type"] == "extra_forbidden":
            raise RankwiseError(f"{where}: unknown field '{field}'") from None
        raise RankwiseError(f"{where}: {field}: {err['msg']}") from None


def load_config(source: MergeConfig | dict[str, Any] | str | os.PathLike[str]) -> MergeConfig:
    """A `MergeConfig` from itself, a dict, or a YAML file path."""
    if isinstance(source, MergeConfig):
        return source
    if isinstance(source, dict):
        return parse_config(source)
    import yaml

    path = Path(source)
    if not path.is_file():
        raise RankwiseError(f"no such merge config file: {path}; pass a mergekit-style YAML file (merge_method, "
                            "base_model, models)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise RankwiseError(f"{path} is not valid YAML ({first}); fix the file (a mergekit-style merge "
                            "config)") from None
    return parse_config(data, str(path))


def evaluate(setting: Setting, tensor_name: str, t: float) -> Scalar | None:
    """The value of one parameter setting for ``tensor_name`` at layer position ``t`` in [0, 1]."""
    if isinstance(setting, Conditional):
        setting = [setting]
    if isinstance(setting, (float, int, bool, str)):
        return setting
    if not setting:
        return None
    if all(isinstance(e, Conditional) for e in setting):
        for cond in setting:
            assert isinstance(cond, Conditional)
            if cond.filter is None or cond.filter == "*" or cond.filter in tensor_name:
                return evaluate(cond.value, tensor_name, t)
        return None
    values = [e for e in setting if not isinstance(e, Conditional)]
    if len(values) != len(setting):
        raise RankwiseError(f"a parameter list mixes numbers and {{filter, value}} entries: {setting}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return values[int(t * (len(values) - 1))]
    pos = t * (len(values) - 1)
    i0 = int(pos)
    i1 = min(len(values) - 1, i0 + 1)
    frac = pos - i0
    return (1 - frac) * float(values[i0]) + frac * float(values[i1])
