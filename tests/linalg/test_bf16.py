import pytest
import torch

from rankwise.linalg.bf16 import cpu_has_bf16_units, outer_sum


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_outer_sum_matches_the_fp64_product(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    a = (3.0 * torch.randn(4096, 48, generator=g)).to(dtype)
    b = torch.randn(4096, 24, generator=g).to(dtype)
    got = outer_sum(a, b)
    ref = a.double().mT @ b.double()
    assert got.dtype == torch.float32 and got.shape == (48, 24)
    # bf16 operands: each product is exact in fp32, only the fp32 sums round
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_outer_sum_leaves_the_process_matmul_precision_as_it_was() -> None:
    if not cpu_has_bf16_units() or not hasattr(torch.backends.mkldnn, "matmul"):
        pytest.skip("no bf16 units on this CPU: outer_sum never changes the matmul precision here")
    before = torch.backends.mkldnn.matmul.fp32_precision
    x = torch.randn(64, 8).bfloat16()
    outer_sum(x, x)
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    y = torch.randn(64, 8)
    # fp32 work after it runs at full precision again: agrees with fp64 to fp32 rounding
    torch.testing.assert_close((y.mT @ y).double(), y.double().mT @ y.double(), rtol=1e-6, atol=1e-5)
