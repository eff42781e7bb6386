"""Post-training compression of an inference module: INT8 tables, dynamic INT8 linears, magnitude pruning.

* Tables: TorchRec's quantized `EmbeddingCollection` (row-wise INT8 with an fp16 scale and bias per row, FBGEMM
  kernels). `quantize_embeddings` only swaps collections that are *children* of the module it is given, so it is
  applied to a parent module, never to the collection itself. The served `serving.inference.Retriever` stores its
  item rows as `Int8Rows` instead (the same row-wise INT8, one copy serving history lookup and scoring).
* Linears: `torch.ao.quantization.quantize_dynamic` per layer group (``attention``: qkv/out projections,
  ``ffn``: feed-forward). Dynamic INT8 pays a per-call activation quantization, which at small widths costs more
  than it saves, so `choose_dense_groups` picks the fastest set of groups timed on a representative input and
  keeps fp32 *compute* where INT8 is not faster. Those groups can still be *stored* in INT8 (`store_int8`:
  per-output-channel symmetric weights, dequantized once when the module is built or loaded), so the artefact
  shrinks without the slower kernels.
* Positions: an encoder's embedding tables (position table) are stored the same way (`Int8Embedding`).
* Pruning: unstructured magnitude pruning (zero the smallest ``|w|`` of each tensor), per layer type ``linear``
  (the blocks' linear weights) and ``embedding`` (the item table). Zeros do not shrink a dense artefact; the
  point is measuring what sparsity costs in NDCG before investing in sparse kernels.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torchrec.inference.modules import quantize_embeddings
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.quant.embedding_modules import EmbeddingCollection as QuantEmbeddingCollection
from torchrec.quant.embedding_modules import quant_prep_customize_row_alignment

DENSE_GROUPS = ("attention", "ffn")
PRUNE_LAYERS = ("linear", "embedding")
# Bytes per INT8 row are padded to this multiple: 4 keeps a 64-wide row at 68 bytes (16 would make it 80).
ROW_ALIGNMENT = 4


def quantize_tables(parent: nn.Module, row_alignment: int = ROW_ALIGNMENT) -> nn.Module:
    """Swap every `EmbeddingCollection` child of ``parent`` (in place) for TorchRec's row-wise INT8 one."""
    quant_prep_customize_row_alignment(parent, [EmbeddingCollection], row_alignment)
    return quantize_embeddings(
        parent,
        dtype=torch.qint8,
        inplace=True,
        additional_qconfig_spec_keys=[EmbeddingCollection],
        additional_mapping={EmbeddingCollection: QuantEmbeddingCollection},
    )


def linear_names(blocks: nn.Module, group: str) -> list[str]:
    """Qualified names (inside ``blocks``) of the `nn.Linear` layers of one of `DENSE_GROUPS`."""
    if group not in DENSE_GROUPS:
        raise ValueError(f"dense group must be one of {DENSE_GROUPS}, got {group!r}")
    marker = ".attn." if group == "attention" else ".ffn."
    return [name for name, m in blocks.named_modules() if isinstance(m, nn.Linear) and marker in f".{name}"]


def quantize_dense(blocks: nn.Module, groups: Iterable[str]) -> nn.Module:
    """Dynamic INT8 (per-tensor weights, activations quantized per call) for the linears of ``groups``, in place."""
    names = {name for group in groups for name in linear_names(blocks, group)}
    if not names:
        return blocks
    with warnings.catch_warnings():  # torch.ao's eager quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(blocks, names, dtype=torch.qint8, inplace=True)


class Int8Rows(nn.Module):
    """A ``(R, C)`` fp32 matrix stored as INT8 with one symmetric fp32 scale per row; ``forward()`` returns it
    dequantized. Max abs error per entry: half a quantization step, ``max|row| / 254``.

    The fp32 copy is made once (at construction and when TorchScript loads the module: ``__setstate__``), not on
    every call, and is never saved (``__getstate__`` holds only the INT8 values and scales): the file stays INT8,
    a call costs what an fp32 weight costs (per-call dequantization was ~0.1 ms of a ~1.5 ms batch-1 call,
    profiled).
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        matrix = matrix.detach().float()
        scale = matrix.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.register_buffer("values", torch.round(matrix / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.dequantized = self.values.to(torch.float32) * self.scale[:, None]  # not a buffer: never saved

    def forward(self) -> torch.Tensor:
        return self.dequantized

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        return self.values, self.scale, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, torch.Tensor, bool]) -> None:
        if not torch.jit.is_scripting():  # copy/pickle in Python: the new object has no module state yet
            nn.Module.__init__(self)
            self.register_buffer("values", state[0])
            self.register_buffer("scale", state[1])
        else:
            self.values, self.scale = state[0], state[1]
        self.training = state[2]
        self.dequantized = self.values.to(torch.float32) * self.scale[:, None]


class Int8StoredLinear(nn.Module):
    """`nn.Linear` with its weight stored INT8 (`Int8Rows`: per output channel) and fp32 compute."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight_int8 = Int8Rows(linear.weight)
        bias = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(linear.out_features)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight_int8(), self.bias)


class Int8Embedding(nn.Module):
    """An embedding lookup (e.g. a position table) over `Int8Rows`: ``forward(index) -> rows[index]``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.rows = Int8Rows(weight)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.rows()[index]


# Modules FX must keep whole when tracing for TorchScript: traced through, the dequantized fp32 value of their INT8
# buffers would be folded into a constant of the scripted model (which would then not be smaller at all).
FX_LEAVES = (Int8Rows.__name__, Int8StoredLinear.__name__, Int8Embedding.__name__)


def store_embeddings_int8(module: nn.Module) -> nn.Module:
    """Replace every `nn.Embedding` inside ``module`` (e.g. an encoder's position table) by `Int8Embedding`."""
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.Embedding) and name:
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, Int8Embedding(child.weight))
    return module


def stored_groups(dynamic_groups: Iterable[str]) -> list[str]:
    """The layer groups left for INT8 storage once ``dynamic_groups`` got dynamic INT8 linears."""
    dynamic = set(dynamic_groups)
    return [g for g in DENSE_GROUPS if g not in dynamic]


def store_int8(blocks: nn.Module, groups: Iterable[str]) -> nn.Module:
    """Replace the (still fp32) `nn.Linear` layers of ``groups`` by `Int8StoredLinear`, in place."""
    for name in {name for group in groups for name in linear_names(blocks, group)}:
        parent_name, _, child = name.rpartition(".")
        parent = blocks.get_submodule(parent_name) if parent_name else blocks
        setattr(parent, child, Int8StoredLinear(getattr(parent, child)))
    return blocks


SERVING_THREADS = 1  # intra-op threads of a serving worker (`seqrec serve`: one worker per core, one thread each)


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Time with ``n`` intra-op threads, as served. Besides matching the server, this keeps timings sane on a busy
    machine: with 2 OpenMP threads on 2 loaded cores, dynamic INT8 linears were measured at 120 ms per call
    instead of 0.6 ms (threads waiting for each other at every kernel), fp32 ones barely slowed."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interleaved_ms(calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Milliseconds per call of each callable, with the serving thread count and the calls interleaved (A B, B A,
    ...): on a shared machine, timing one block of calls after another measures order and drift more than the
    code (0.68x for two models that interleaved calls show within 3% of each other). The first ``warmup``
    rounds are not kept (TorchScript profiling passes, weight packing, allocator)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls.items())
    with torch.inference_mode(), intra_op_threads(SERVING_THREADS):
        for i in range(warmup + repeats):
            for name, fn in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                fn()
                if i >= warmup:
                    times[name].append(1000.0 * (time.perf_counter() - start))
    return times


def dense_combinations() -> list[tuple[str, ...]]:
    """Every non-empty set of `DENSE_GROUPS`, smallest first: the dynamic-INT8 choices `time_dense_groups` times."""
    return [combo for size in range(1, len(DENSE_GROUPS) + 1) for combo in itertools.combinations(DENSE_GROUPS, size)]


def time_dense_groups(
    module: nn.Module, call: Callable[[nn.Module], object], repeats: int = 20
) -> dict[str, dict[str, float]]:
    """Median latency (ms) of ``call(module)`` (`interleaved_ms`): fp32, and with each set of groups in INT8 (keyed
    like ``"attention+ffn"``). Sets, not single groups: what one group's INT8 kernels save can be too little to
    show alone and still add up with the other's."""
    trials = {"fp32": module, **{"+".join(c): quantize_dense(copy.deepcopy(module), c) for c in dense_combinations()}}
    ms = interleaved_ms({name: functools.partial(call, m) for name, m in trials.items()}, repeats)
    median = {name: statistics.median(t) for name, t in ms.items()}
    timings = {"fp32": {"ms": median["fp32"]}}
    for name in trials:
        if name != "fp32":
            timings[name] = {"ms": median[name], "speedup": median["fp32"] / median[name]}
    return timings


def choose_dense_groups(timings: dict[str, dict[str, float]], min_speedup: float = 1.05) -> list[str]:
    """The fastest timed set of groups if it was at least ``min_speedup`` times faster than fp32, else none."""
    timed = [name for name in timings if name != "fp32"]
    if not timed:
        return []
    best = max(timed, key=lambda name: timings[name]["speedup"])
    return best.split("+") if timings[best]["speedup"] >= min_speedup else []


def magnitude_prune(tensor: torch.Tensor, sparsity: float) -> None:
    """Zero (in place) the ``sparsity`` fraction of entries of ``tensor`` with the smallest magnitude."""
    count = int(round(sparsity * tensor.numel()))
    if count <= 0:
        return
    flat = tensor.detach().reshape(-1)
    smallest = torch.topk(flat.abs(), count, largest=False).indices
    flat[smallest] = 0.0


def prune_targets(dense: nn.Module, tables: Sequence[torch.Tensor], layers: Sequence[str]) -> list[torch.Tensor]:
    """The weight tensors pruned for each layer type in ``layers`` (biases and norms are never pruned): the
    linears of ``dense`` and the item ``tables`` (callers leave out row 0, the never-looked-up padding row)."""
    unknown = sorted(set(layers) - set(PRUNE_LAYERS))
    if unknown:
        raise ValueError(f"prune layer types must be among {PRUNE_LAYERS}, got {unknown}")
    tensors = []
    if "linear" in layers:
        tensors += [m.weight for m in dense.modules() if isinstance(m, nn.Linear)]
    if "embedding" in layers:
        tensors += list(tables)
    return tensors


@torch.no_grad()
def prune(dense: nn.Module, tables: Sequence[torch.Tensor], sparsity: float, layers: Sequence[str]) -> float:
    """Magnitude-prune each target tensor to ``sparsity`` (in place, fp32, before quantization); returns the
    fraction of zeros achieved over all targets."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"prune sparsity must be in [0, 1), got {sparsity}")
    targets = prune_targets(dense, tables, layers)
    for tensor in targets:
        magnitude_prune(tensor, sparsity)
    return sparsity_of(targets)


def sparsity_of(tensors: Sequence[torch.Tensor]) -> float:
    """Fraction of exact zeros over all ``tensors``."""
    total = sum(t.numel() for t in tensors)
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros / total if total else 0.0


def tensor_bytes(module: nn.Module) -> int:
    """Bytes held by ``module``'s parameters, buffers and packed quantized weights (what the artefact stores)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    for m in module.modules():
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            weight, bias = m._packed_params._weight_bias()
            total += weight.numel() * weight.element_size() + (bias.numel() * bias.element_size() if bias is not None else 0)
    return total
