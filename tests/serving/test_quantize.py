"""INT8 storage of dense weights: error bounds, in-place replacement, and that scripting keeps them INT8."""

# No `from __future__ import annotations`: FX and TorchScript read the annotations of `Wrapper.forward`.
import pytest
import torch
from torch import nn

from modules.transformer import TransformerBlock
from serving import quantize
from serving.inference import script


def test_int8_rows_round_trip_within_half_a_step() -> None:
    matrix = torch.randn(50, 24, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.01, 5, 50)[:, None]
    rows = quantize.Int8Rows(matrix)
    assert rows.values.dtype == torch.int8 and rows.scale.shape == (50,)
    step = matrix.abs().amax(dim=1, keepdim=True) / 127
    assert bool(((rows() - matrix).abs() <= step / 2 + 1e-7).all())
    zero = quantize.Int8Rows(torch.zeros(3, 4))  # an all-zero row must not divide by zero
    assert torch.equal(zero(), torch.zeros(3, 4))


def test_store_int8_replaces_only_the_chosen_group_and_stays_close() -> None:
    torch.manual_seed(0)
    blocks = nn.ModuleList([TransformerBlock(32, num_heads=2), TransformerBlock(32, num_heads=2)]).eval()
    x = torch.randn(4, 10, 32)
    with torch.no_grad():
        expected = blocks[1](blocks[0](x, True), True)
        quantize.store_int8(blocks, ["ffn"])
        got = blocks[1](blocks[0](x, True), True)
    assert isinstance(blocks[0].ffn[0], quantize.Int8StoredLinear)
    assert isinstance(blocks[1].attn.qkv, nn.Linear)  # attention untouched
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.02)
    assert not torch.equal(got, expected)  # really quantized


def test_scripted_int8_weights_are_stored_as_int8() -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = quantize.Int8StoredLinear(nn.Linear(64, 64))
            self.table = quantize.Int8Rows(torch.randn(100, 64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x) + self.table()[:1]

    module = Wrapper().eval()
    scripted = script(module)  # the export's own FX-trace + TorchScript path
    x = torch.randn(3, 64)
    torch.testing.assert_close(scripted(x), module(x))
    stored = [t for t in [*scripted.buffers(), *scripted.parameters()] if t.dtype == torch.float32 and t.numel() > 1000]
    assert not stored, "a dequantized fp32 copy was folded into the scripted module"
    assert quantize.tensor_bytes(module) < 100 * 64 + 64 * 64 + 2000


def test_timings_set_the_thread_count_and_restore_it() -> None:
    before = torch.get_num_threads()
    other = before + 1  # differs from the current count, so setting and restoring are both observable
    with quantize.intra_op_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), quantize.intra_op_threads(other):
        raise RuntimeError("timing failed")
    assert torch.get_num_threads() == before


def test_dequantized_copy_is_made_once_and_never_saved() -> None:
    import copy
    import io
    import pickle

    rows = quantize.Int8Rows(torch.randn(2000, 64))
    assert rows() is rows()  # the fp32 copy is cached, not rebuilt per call
    for clone in (copy.deepcopy(rows), pickle.loads(pickle.dumps(rows))):
        assert torch.equal(clone(), rows()) and set(dict(clone.named_buffers())) == {"values", "scale"}
    scripted = torch.jit.script(rows)
    scripted()  # called before saving: the copy must still stay out of the file
    saved = io.BytesIO()
    torch.jit.save(scripted, saved)
    int8_bytes = 2000 * 64 + 2000 * 4
    assert int8_bytes < len(saved.getvalue()) < int8_bytes + 16_000  # fp32 would add 512 kB
    loaded = torch.jit.load(io.BytesIO(saved.getvalue()))
    assert torch.equal(loaded(), rows())


def test_auto_dense_choice_takes_the_fastest_set_of_groups() -> None:
    assert quantize.dense_combinations() == [("attention",), ("ffn",), ("attention", "ffn")]
    alone_short = {"fp32": {"ms": 10.0}, "attention": {"ms": 9.7, "speedup": 1.03}, "ffn": {"ms": 9.8, "speedup": 1.02},
                   "attention+ffn": {"ms": 8.0, "speedup": 1.25}}
    assert quantize.choose_dense_groups(alone_short) == ["attention", "ffn"]
    one = {**alone_short, "attention": {"ms": 7.0, "speedup": 1.43}}
    assert quantize.choose_dense_groups(one) == ["attention"]
    slower = {"fp32": {"ms": 10.0}, **{k: {"ms": 10.2, "speedup": 0.98} for k in ("attention", "ffn", "attention+ffn")}}
    assert quantize.choose_dense_groups(slower) == []
    assert quantize.choose_dense_groups({"fp32": {"ms": 1.0}}) == []


def test_time_dense_groups_times_fp32_and_every_set() -> None:
    torch.manual_seed(0)
    blocks = nn.ModuleList([TransformerBlock(16, num_heads=1)]).eval()
    x = torch.randn(2, 8, 16)
    timings = quantize.time_dense_groups(blocks, lambda b: b[0](x, True), repeats=2)
    assert set(timings) == {"fp32", "attention", "ffn", "attention+ffn"}
    for name, timing in timings.items():
        assert timing["ms"] > 0
        if name != "fp32":
            assert timing["speedup"] == pytest.approx(timings["fp32"]["ms"] / timing["ms"])
    assert isinstance(blocks[0].attn.qkv, nn.Linear)  # the blocks timed as fp32 are left as they were
