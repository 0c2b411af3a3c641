"""The one registry type: snake_case names, no duplicates, one-line misses with a suggestion."""

from __future__ import annotations

import pytest

from rankwise.errors import RankwiseError
from rankwise.registry import Registry


def test_lookup_miss_lists_names_and_suggests_the_closest() -> None:
    reg: Registry[int] = Registry("merge method")
    reg.add("dare_ties", 1)
    reg.add("ties", 2)
    assert reg.get("ties") == 2
    with pytest.raises(RankwiseError, match=r"^unknown merge method 'dare-ties' \(did you mean 'dare_ties'\?\); "
                       r"choose one of: dare_ties, ties$"):
        reg.get("dare-ties")
    with pytest.raises(RankwiseError, match=r"^unknown merge method 'zzz'; choose one of"):
        reg.get("zzz")


@pytest.mark.parametrize("name", ["Ties", "dare-ties", "2x", "a__b", ""])
def test_rejects_names_that_are_not_snake_case(name: str) -> None:
    with pytest.raises(ValueError, match="not snake_case"):
        Registry[int]("x").add(name, 0)


def test_rejects_duplicates_and_loads_lazily() -> None:
    loaded: list[int] = []
    reg: Registry[int] = Registry("projector", loader=lambda: loaded.append(1) or reg.add("svd", 0))
    assert not loaded
    assert reg.names() == ["svd"] and loaded == [1]
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("svd", 1)
    assert "svd" in reg and len(reg) == 1 and list(reg) == ["svd"]
