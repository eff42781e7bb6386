"""SASRec: every loss trains, outputs line up with targets, padding and batch-mates do not leak, meta build works,
and the model runs unchanged on TorchRec's sharded collection inside the sparse-dist pipeline."""

from __future__ import annotations

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from modules import losses, registry
from modules.batch import Batch
from modules.encoders.sasrec import SASRecConfig, SASRecEncoderConfig
from modules.objectives import LOSSES, ObjectiveConfig
from modules.sequence import padded_groups
from tests.modules.factories import sasrec

N = 24  # items 1..N


def make_batch(
    sequences: list[list[int]], kind: str = "causal", num_negatives: int = 3, seed: int = 0, targets=None
) -> Batch:
    """Causal: history = seq[:-1], target = seq[1:]; last: history = seq[:-1], target = [seq[-1]] (or ``targets``)."""
    gen = torch.Generator().manual_seed(seed)
    history = [s[:-1] for s in sequences]
    if targets is None:
        targets = [s[1:] for s in sequences] if kind == "causal" else [s[-1:] for s in sequences]
    negatives = torch.randint(1, N + 1, (len(sequences) * num_negatives,), generator=gen)
    lengths = [len(h) for h in history] + [len(t) for t in targets] + [num_negatives] * len(sequences)
    values = [i for h in history for i in h] + [i for t in targets for i in t] + negatives.tolist()
    sparse = KeyedJaggedTensor(
        keys=["history", "target", "negatives"], values=torch.tensor(values), lengths=torch.tensor(lengths)
    )
    return Batch(sparse=sparse, user_idx=torch.arange(len(sequences)), kind=kind)


def chain(start: int, length: int) -> list[int]:
    """Items following the pattern i -> i + 1 (wrapping N -> 1)."""
    return [(start + j - 1) % N + 1 for j in range(length)]


def model(**kwargs):
    torch.manual_seed(0)
    settings = {"dim": 16, "max_len": 12, "num_blocks": 2, "num_heads": 2, "dropout": 0.0} | kwargs
    return sasrec(N, **settings)


VARYING = [chain(1, 9), chain(5, 2), chain(11, 5), chain(20, 12)]  # history lengths 8, 1, 4, 11


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("loss", LOSSES)
def test_forward_backward_every_loss(loss: str, tie_weights: bool) -> None:
    net = model(loss=loss, tie_weights=tie_weights, dropout=0.2).train()
    value, logs = net(make_batch(VARYING))
    value.backward()
    assert set(logs) == {"loss", "num_targets", "num_sequences"}
    assert int(logs["num_targets"]) == sum(len(s) - 1 for s in VARYING)
    assert torch.isfinite(value) and value > 0
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)
    assert net.encoder.positions.weight.grad.abs().sum() > 0


def test_causal_losses_line_up_with_targets() -> None:
    """The model's loss equals the loss functions applied to sequence_outputs and the table, target by target."""
    batch = make_batch(VARYING)
    targets = batch.sparse["target"].values()
    with torch.no_grad():
        tied = model(loss="softmax").eval()
        table = torch.cat([torch.zeros(1, 16), tied.item_embeddings(torch.arange(1, N + 1))])
        expected = losses.softmax_loss(tied.sequence_outputs(batch), table, targets)
        torch.testing.assert_close(tied(batch)[0], expected)

        bce = model(loss="bce", tie_weights=False).eval()
        query = bce.sequence_outputs(batch)
        negative_ids = batch.sparse["negatives"].values().view(len(VARYING), 3)
        per_target_ids = negative_ids.repeat_interleave(batch.sparse["history"].lengths(), dim=0)
        assert (per_target_ids == targets[:, None]).any()  # the batch has accidental hits to drop
        negatives = bce.item_embeddings(per_target_ids.flatten()).view(-1, 3, 16)
        expected = losses.bce_loss(query, bce.item_embeddings(targets), negatives, targets, per_target_ids)
        torch.testing.assert_close(bce(batch)[0], expected)


def test_in_batch_negatives_when_the_batch_has_none() -> None:
    batch = make_batch(VARYING, num_negatives=0)
    batch.target_logq = torch.full((batch.sparse["target"].values().numel(),), -3.0)
    net = model(loss="sampled_softmax").eval()
    with torch.no_grad():
        targets = batch.sparse["target"].values()
        emb = net.item_embeddings(targets)
        expected = losses.sampled_softmax_loss(
            net.sequence_outputs(batch), emb, emb, targets, targets, batch.target_logq, batch.target_logq
        )
        torch.testing.assert_close(net(batch)[0], expected)


def test_last_kind_scores_the_last_position_against_every_target() -> None:
    batch = make_batch(VARYING, kind="last", targets=[[3], [7, 8], [1], [2, 4, 6]])
    net = model(loss="softmax").eval()
    value, logs = net(batch)
    assert int(logs["num_targets"]) == 7
    with torch.no_grad():
        query = net.encode(batch).repeat_interleave(torch.tensor([1, 2, 1, 3]), dim=0)
        table = torch.cat([torch.zeros(1, 16), net.item_embeddings(torch.arange(1, N + 1))])
        torch.testing.assert_close(value, losses.softmax_loss(query, table, batch.sparse["target"].values()))


@pytest.mark.parametrize("loss", LOSSES)
def test_learns_next_item_pattern(loss: str) -> None:
    """Item i is always followed by i + 1: after 50 steps the loss has dropped and the next item ranks first.

    (gBCE with t = 0.75 weighs the positive by beta ~ 0.4 here and needs the most steps.)
    """
    net = model(loss=loss, dim=32, num_heads=1).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.03)
    gen = torch.Generator().manual_seed(1)
    history = []
    for step in range(50):
        starts, lengths = (
            torch.randint(1, N + 1, (32,), generator=gen),
            torch.randint(2, 13, (32,), generator=gen),
        )
        batch = make_batch(
            [chain(int(s), int(n)) for s, n in zip(starts, lengths)], num_negatives=4, seed=step
        )
        value, _ = net(batch)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        history.append(value.item())
    assert sum(history[-5:]) < 0.5 * sum(history[:5])
    net.eval()
    users = [chain(start, 2 + start % 11) for start in range(1, N + 1)]  # histories of length 1..11
    eval_batch = make_batch(users, kind="last")
    with torch.no_grad():
        scores = net.encode(eval_batch) @ net.item_embeddings(torch.arange(1, N + 1)).T
    predicted = scores.argmax(1) + 1
    hits = (predicted == eval_batch.sparse["target"].values()).float().mean()
    assert hits >= 0.8, f"{loss}: top-1 hit rate {hits:.2f}"


def test_encode_is_the_causal_output_at_the_last_position() -> None:
    net = model(loss="softmax").eval()
    batch = make_batch(VARYING)
    with torch.no_grad():
        outputs = net.sequence_outputs(batch)
        last = batch.sparse["history"].offsets()[1:] - 1
        torch.testing.assert_close(net.encode(batch), outputs[last])


def test_length_one_histories_give_no_nan() -> None:
    for sequences in ([chain(3, 2), chain(9, 2)], [chain(3, 2), chain(1, 12)]):
        net = model(loss="gbce", dropout=0.2).train()
        value, _ = net(make_batch(sequences))
        value.backward()
        assert torch.isfinite(value)
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        assert torch.isfinite(net.eval().encode(make_batch(sequences))).all()


def test_a_user_does_not_depend_on_batch_mates() -> None:
    net = model(loss="softmax").eval()
    user = chain(7, 4)
    with torch.no_grad():
        alone = net.encode(make_batch([user], kind="last"))
        with_others = net.encode(make_batch([chain(1, 12), user, chain(2, 2)], kind="last"))[1:2]
        torch.testing.assert_close(with_others, alone, rtol=1e-5, atol=1e-5)
        seq_alone = net.sequence_outputs(make_batch([user]))
        seq_mixed = net.sequence_outputs(make_batch([chain(1, 12), user]))[11:]
        torch.testing.assert_close(seq_mixed, seq_alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [2, 3, 8])  # 8 > batch size: one group per sequence
def test_length_groups_give_the_whole_batch_outputs_and_gradients(groups: int) -> None:
    mixed = VARYING + [chain(3, 3), chain(9, 7)]  # history lengths 8, 1, 4, 11, 2, 6
    batch = make_batch(mixed)
    results = []
    for count in (1, groups):
        net = model(loss="softmax", length_groups=count).train()  # dropout 0: train mode is deterministic
        value, _ = net(batch)
        value.backward()
        results.append((net.sequence_outputs(batch), value, net.encoder.blocks[0].ffn[0].weight.grad))
    (whole, loss_whole, grad_whole), (grouped, loss_grouped, grad_grouped) = results
    torch.testing.assert_close(grouped, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_grouped, loss_whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_grouped, grad_whole, rtol=1e-4, atol=1e-6)


def test_padded_groups_sort_by_length_and_restore_the_order() -> None:
    lengths = torch.tensor([5, 1, 9, 3, 7])
    groups, restore = padded_groups(lengths, 2)
    assert [(rows.tolist(), width) for rows, width in groups] == [([1, 3, 0], 5), ([4, 2], 9)]
    assert torch.equal(torch.cat([rows for rows, _ in groups])[restore], torch.arange(5))


def test_meta_build_then_to_empty_and_reset() -> None:
    net = sasrec(N, dim=16, max_len=12, loss="bpr", tie_weights=False, device="meta")
    assert all(p.is_meta for p in net.parameters())
    net = net.to_empty(device="cpu")
    torch.manual_seed(0)
    net.reset_parameters()
    assert all(torch.isfinite(p).all() for p in net.parameters())
    layer_norm = net.encoder.final_norm
    assert torch.all(layer_norm.weight == 1) and torch.all(layer_norm.bias == 0)
    assert 0.01 < net.encoder.positions.weight.std().item() < 0.03  # position_init_std=0.02, not N(0, 1)
    value, _ = net(make_batch(VARYING))
    assert torch.isfinite(value)


def test_item_embeddings_come_from_the_scoring_table() -> None:
    ids = torch.tensor([5, 1, 24])
    tied = model(loss="softmax")
    torch.testing.assert_close(tied.item_embeddings(ids), tied.item_ec.embeddings["item_table"].weight[ids])
    untied = model(loss="softmax", tie_weights=False)
    torch.testing.assert_close(
        untied.item_embeddings(ids), untied.out_ec.embeddings["item_out_table"].weight[ids]
    )
    assert not torch.allclose(
        untied.item_embeddings(ids), untied.item_ec.embeddings["item_table"].weight[ids]
    )


def test_config_builds_through_the_registry_and_validates_each_component() -> None:
    config = SASRecConfig(
        dim=8, objective=ObjectiveConfig(loss="gbce", gbce_t=0.5), encoder=SASRecEncoderConfig(num_heads=2)
    )
    net = registry.build(config, num_items=N, max_len=12)
    assert net.config == config
    assert sum(p.numel() for p in net.parameters()) == sum(
        p.numel() for p in sasrec(N, max_len=12, dim=8, num_heads=2).parameters()
    )
    for bad, match in (
        ({"loss": "ce"}, "model.objective.loss"),
        ({"dim": 6}, "model.dim"),
        ({"num_heads": 3}, "divisible"),
        ({"attn_backend": "flash"}, "model.encoder.attn_backend"),
        ({"temperature": 0.0}, "model.objective.temperature"),
        ({"block": "post_ln"}, "model.encoder.block"),
        ({"position_init_std": 0.0}, "position_init_std"),
        ({"length_groups": 0}, "length_groups"),
        ({"dropout": 1.5}, "model.encoder.dropout"),
    ):
        with pytest.raises(ValueError, match=match):
            sasrec(N, max_len=12, dim=bad.pop("dim", 8), **bad)
    with pytest.raises(TypeError):
        SASRecEncoderConfig(2)  # keyword-only


def test_bad_batches_are_rejected() -> None:
    net = model(loss="bce")
    with pytest.raises(ValueError, match="max_len"):
        net(make_batch([chain(1, 14)]))
    with pytest.raises(ValueError, match="same number"):
        net(make_batch(VARYING, num_negatives=0))
    with pytest.raises(ValueError, match="kinds"):
        batch = make_batch(VARYING, kind="last")
        batch.kind = "ranker"
        net(batch)


@pytest.mark.parametrize(
    ("loss", "tie_weights"), [("softmax", True), ("sampled_softmax", True), ("gbce", False)]
)
def test_runs_sharded_in_the_sparse_dist_pipeline(tmp_path, loss: str, tie_weights: bool) -> None:
    """DistributedModelParallel (1 gloo process) materialises the meta model; TrainPipelineSparseDist trains it."""
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embedding import EmbeddingCollectionSharder, ShardedEmbeddingCollection
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from torchrec.distributed.types import ShardingType
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = sasrec(N, dim=16, max_len=12, dropout=0.0, loss=loss, tie_weights=tie_weights, device="meta")
        tables = [net.item_ec] + ([net.out_ec] if net.out_ec is not None else [])
        for ec in tables:
            apply_optimizer_in_backward(torch.optim.Adagrad, ec.parameters(), {"lr": 0.1})
        # data_parallel sharding of an unpooled collection fails on CPU: allow only row-/table-wise.
        allowed = ParameterConstraints(
            sharding_types=[ShardingType.ROW_WISE.value, ShardingType.TABLE_WISE.value]
        )
        planner = EmbeddingShardingPlanner(
            topology=Topology(world_size=1, compute_device="cpu"),
            constraints={"item_table": allowed, "item_out_table": allowed},
        )
        sharders = [EmbeddingCollectionSharder()]
        plan = planner.collective_plan(net, sharders, dist.GroupMember.WORLD)
        dmp = DistributedModelParallel(net, device=torch.device("cpu"), plan=plan, sharders=sharders)
        assert isinstance(dmp.module.item_ec, ShardedEmbeddingCollection)
        # DMP initialises the unsharded meta leaves through their own reset_parameters: positions start small
        assert 0.01 < dmp.module.encoder.positions.weight.std().item() < 0.03
        dense = {name: p for name, p in dmp.named_parameters() if "_ec." not in name}
        optimizer = CombinedOptimizer(
            [dmp.fused_optimizer, KeyedOptimizerWrapper(dense, lambda ps: torch.optim.Adam(ps, lr=0.02))]
        )
        pipeline = TrainPipelineSparseDist(dmp, optimizer, torch.device("cpu"))
        batches = iter([make_batch(VARYING, num_negatives=4, seed=step) for step in range(16)])
        curve = []
        while (logs := _progress(pipeline, batches)) is not None:
            curve.append(float(logs["loss"]))
        assert len(curve) == 16 and all(map(torch.isfinite, torch.tensor(curve)))
        assert curve[-1] < 0.7 * curve[0]
        pipeline.detach()
        with torch.no_grad():
            assert dmp.module.encode(make_batch(VARYING, kind="last")).shape == (4, 16)
            assert dmp.module.item_embeddings(torch.arange(1, N + 1)).shape == (N, 16)
    finally:
        dist.destroy_process_group()


def _progress(pipeline, batches):
    try:
        return pipeline.progress(batches)
    except StopIteration:
        return None


def test_sampled_softmax_chunked_and_plain_give_the_same_loss_and_gradients() -> None:
    batch = make_batch(VARYING, num_negatives=3)
    results = []
    for chunk in (0, 2):
        net = model(loss="sampled_softmax", softmax_chunk=chunk).train()
        value, _ = net(batch)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert len(results[0][1]) == len(results[1][1]) > 0
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
