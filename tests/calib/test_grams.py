import torch

from rankwise.calib import collect_grams
from rankwise.modules import select_targets
from tests.conftest import tiny_llama


def test_grams_match_captured_inputs_and_are_shared_per_distinct_input() -> None:
    model = tiny_llama(seed=1)
    names = select_targets(model, "all-linear")
    windows = torch.randint(0, 128, (5, 16), generator=torch.Generator().manual_seed(0))
    grams = collect_grams(model, names, windows, batch_size=2, progress=False)
    layer = "model.layers.1"
    attn = f"{layer}.self_attn"
    assert grams[f"{attn}.q_proj"] is grams[f"{attn}.k_proj"] is grams[f"{attn}.v_proj"]
    assert grams[f"{layer}.mlp.gate_proj"] is grams[f"{layer}.mlp.up_proj"]
    assert grams[f"{layer}.mlp.down_proj"] is not grams[f"{layer}.mlp.up_proj"]
    assert len({id(g) for g in grams.values()}) == 2 * 4
    # Reference: capture down_proj's input directly.
    seen = []
    down = model.model.layers[1].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, 64)))
    with torch.no_grad():
        model(windows)
    handle.remove()
    X = torch.cat(seen).double()
    acc = grams[f"{layer}.mlp.down_proj"]
    assert acc.count == 5 * 16
    torch.testing.assert_close(acc.gram, X.mT @ X, rtol=1e-4, atol=1e-4)
    assert not model.model.layers[1].mlp.down_proj._forward_pre_hooks
