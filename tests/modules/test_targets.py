import pytest
from torch import nn

from rankwise import RankwiseError
from rankwise.modules import replace_module, select_targets
from tests.conftest import tiny_llama


def test_all_linear_selects_the_seven_projections_per_block_and_no_head() -> None:
    names = select_targets(tiny_llama(), "all-linear")
    assert len(names) == 2 * 7 and not any("lm_head" in n for n in names)


def test_suffix_regex_and_callable_specs() -> None:
    model = tiny_llama()
    assert select_targets(model, ["q_proj", "v_proj"]) == [
        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj",
    ]
    assert select_targets(model, r"re:.*\.1\.mlp\..*") == [f"model.layers.1.mlp.{p}" for p in ("gate_proj", "up_proj",
                                                                                               "down_proj")]
    assert select_targets(model, lambda n, m: m.out_features == 64) == [
        f"model.layers.{i}.mlp.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj")]


def test_no_match_lists_close_names() -> None:
    with pytest.raises(RankwiseError, match=r"did you mean .*q_proj"):
        select_targets(tiny_llama(), ["q_prj"])


def test_replace_module_swaps_in_place() -> None:
    model = tiny_llama()
    new = nn.Identity()
    old = replace_module(model, "model.layers.0.mlp", new)
    assert model.model.layers[0].mlp is new and old is not new
