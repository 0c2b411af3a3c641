# Written by rankwise into compressed model folders so that plain transformers can load them:
#     AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
# It needs only torch and transformers. rankwise itself loads these folders without this file.
# The line importing the base class is filled in by rankwise when the folder is written.
from torch import nn
from transformers import BASE_CLASS_PLACEHOLDER as _Base  # type: ignore[attr-defined]


class LowRankLinear(nn.Module):
    """y = B(A(x)); A.weight [r, in], B.weight [out, r] (+ bias on B)."""

    def __init__(self, in_features, out_features, rank, bias=False):  # type: ignore[no-untyped-def]
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.B(self.A(x))


class RankwiseLowRankForCausalLM(_Base):  # type: ignore[misc,valid-type]
    """The base architecture with the layers in ``config.rankwise_rank_map`` factorised."""

    def __init__(self, config):  # type: ignore[no-untyped-def]
        super().__init__(config)
        for name, rank in (getattr(config, "rankwise_rank_map", None) or {}).items():
            parent_name, _, attr = name.rpartition(".")
            parent = self.get_submodule(parent_name) if parent_name else self
            old = getattr(parent, attr)
            new = LowRankLinear(old.in_features, old.out_features, rank, bias=old.bias is not None)
            setattr(parent, attr, new.to(old.weight.dtype))
