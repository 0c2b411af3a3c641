"""Target selection and module replacement (shared by compress and adapt)."""

from rankwise.modules.replace import parent_of, replace_module
from rankwise.modules.targets import TargetSpec, linear_at, linear_modules, select_targets

__all__ = ["TargetSpec", "linear_at", "linear_modules", "parent_of", "replace_module", "select_targets"]
