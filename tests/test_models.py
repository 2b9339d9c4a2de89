"""In-memory quantization of synthetic models, on the CPU: the layers it swaps, what it keeps."""
from __future__ import annotations

import pytest

from pytest_quantperf import models

pytest.importorskip("bitsandbytes")


def _tiny():
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Linear(128, 256, bias=True)
            self.block = nn.ModuleDict({"down": nn.Linear(256, 128, bias=False)})
            self.lm_head = nn.Linear(128, 64, bias=False)

        def forward(self, x):
            return self.lm_head(self.block["down"](self.up(x)))

    torch.manual_seed(0)
    return Tiny().eval()


@pytest.mark.parametrize("quant, double_quant, max_err", [
    ("nf4", False, 0.15), ("fp4", True, 0.25), ("int8", None, 0.03)])
def test_quantize_in_memory_on_cpu(quant, double_quant, max_err):
    import bitsandbytes as bnb
    import torch

    model = _tiny()
    x = torch.randn(4, 128)
    with torch.no_grad():
        want = model(x)
    bias = model.up.bias.detach().clone()
    head = model.lm_head
    spec = models.make_spec("synthetic:smollm2-135m", quant, double_quant=double_quant, device="cpu")
    models.quantize_in_memory(model, spec)

    layer = bnb.nn.Linear8bitLt if quant == "int8" else bnb.nn.Linear4bit
    assert isinstance(model.up, layer) and isinstance(model.block["down"], layer)
    assert model.lm_head is head  # the head stays a plain Linear, as transformers keeps it
    assert torch.equal(model.up.bias, bias)
    if quant == "int8":
        assert model.up.weight.dtype == torch.int8 and model.up.weight.SCB is not None
    else:
        qs = model.up.weight.quant_state
        assert qs is not None and model.up.quant_state is qs and qs.quant_type == quant
        assert qs.nested is bool(double_quant)
        assert model.up.weight.numel() == 128 * 256 // 2  # two 4-bit values per byte
    with torch.no_grad():
        got = model(x).float()
    assert float((got - want).norm() / want.norm()) < max_err

    summary = models.inspect_quantization(model, spec, footprint_bytes=0)
    assert (summary.linear4bit, summary.linear8bit, summary.plain_linear) == \
        ((0, 2, 1) if quant == "int8" else (2, 0, 1))
    assert summary.params_quantized == 2 * 128 * 256
    models.verify_quantization(summary, spec)
