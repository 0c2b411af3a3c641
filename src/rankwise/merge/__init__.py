"""Merging models and adapters: mergekit-style YAML configs, streamed tensor by tensor.

    import rankwise as rw
    rw.merge.run("merge.yaml", "merged/")              # or a dict / MergeConfig
    rw.merge.get("ties")(base, [w1, w2], weight=[0.5, 0.5], density=[0.5, 0.5])   # one tensor
"""

from rankwise.merge.config import MergeConfig, load_config
from rankwise.merge.driver import MergeResult, plan, run
from rankwise.merge.methods.base import METHODS, MergeMethod, get

__all__ = ["METHODS", "MergeConfig", "MergeMethod", "MergeResult", "get", "load_config", "plan", "run"]
