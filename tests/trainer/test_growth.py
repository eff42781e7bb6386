"""Fine-tuning into a grown catalogue: a checkpoint's table rows are copied into a larger (sharded) table, new rows
are initialised as configured, everything else loads as usual, and a dataset with other item ids is refused."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import train_overrides
from tests.modules.model_zoo import retrieval_models
from trainer.config import load_config
from trainer.data.append import AppendConfig, append
from trainer.data.prepare import PrepareConfig, prepare
from trainer.data.schema import read_manifest
from trainer.data.synth import SynthConfig, generate
from trainer.distributed import init_distributed, shutdown_distributed
from trainer.errors import ConfigError
from trainer.growth import table_keys
from trainer.train import Trainer, run_training


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """v1 from one synthetic log, v2 = v1 + a second log (new users and items), and an unrelated dataset."""
    root = tmp_path_factory.mktemp("growth")
    for name, seed, items in (("day1", 1, 150), ("day2", 2, 200)):
        generate(SynthConfig(users=200, items=items, categories=6, seed=seed, mean_length=10, max_length=40),
                 root / name, progress=False)
    prepare(PrepareConfig(format="synthetic", input=root / "day1", output=root / "v1"))
    append(AppendConfig(parent=root / "v1", format="synthetic", input=root / "day2", output=root / "v2"))
    prepare(PrepareConfig(format="synthetic", input=root / "day2", output=root / "other"))
    return root / "v1", root / "v2", root / "other"


def overrides(dataset: Path, out: Path, *extra: str) -> list[str]:
    """The tiny training overrides; with another ``model=`` its own dropout default (not every encoder has one)."""
    chosen = train_overrides(dataset, out, *extra)
    return [o for o in chosen if "encoder.dropout" not in o] if any(o.startswith("model=") for o in extra) else chosen


def tables_after_init(dataset: Path, out: Path, *extra: str) -> dict[str, torch.Tensor]:
    """Every embedding table of a Trainer's model right after it loaded its initial state (world size 1)."""
    env = init_distributed()
    try:
        trainer = Trainer(load_config(overrides(dataset, out, *extra)), env)
        state = trainer.model.state_dict()
        return {key: _full(state[key]) for key in table_keys(trainer.model, state)}
    finally:
        shutdown_distributed()


def _full(table) -> torch.Tensor:
    if isinstance(table, torch.Tensor) and not hasattr(table, "local_shards"):
        return table.detach().clone()
    out = torch.zeros(table.size())
    for shard in table.local_shards():  # one rank holds every shard here
        r, c = shard.metadata.shard_offsets
        out[r: r + shard.tensor.shape[0], c: c + shard.tensor.shape[1]] = shard.tensor
    return out


def test_checkpoint_loads_into_a_larger_catalogue_with_old_rows_equal(versions, tmp_path: Path) -> None:
    v1, v2, _ = versions
    old_items, new_items = read_manifest(v1).num_items, read_manifest(v2).num_items
    assert new_items > old_items
    base = run_training(load_config(train_overrides(v1, tmp_path, "trainer.run_id=base", "trainer.max_steps=6",
                                                    "trainer.test_at_end=false")))
    trained = tables_after_init(v1, tmp_path, "trainer.run_id=same", f"trainer.init_from={base['run_dir']}")
    (key, old_table), = trained.items()
    assert old_table.shape[0] == old_items + 1
    for how in ("model", "mean"):
        grown = tables_after_init(v2, tmp_path, f"trainer.run_id=grown-{how}", f"trainer.init_from={base['run_dir']}",
                                  f"trainer.init_new_items={how}")[key]
        assert grown.shape[0] == new_items + 1
        assert torch.equal(grown[: old_items + 1], old_table)
        new = grown[old_items + 1:]
        if how == "mean":
            assert torch.allclose(new, old_table[1:].mean(0).expand_as(new), atol=1e-6)
        else:  # the model's own init: random, not zero, not a copy of an old row
            assert new.std() > 0 and not torch.isclose(new[0], old_table[1:]).all(dim=1).any()
    # a dense layer was loaded too (the same as in the checkpoint), not left at its fresh init
    fresh = tables_after_init(v2, tmp_path, "trainer.run_id=fresh")[key]
    assert not torch.equal(fresh[: old_items + 1], old_table)


@pytest.mark.parametrize("name", retrieval_models())
def test_every_retrieval_model_fine_tunes_into_the_grown_catalogue(name: str, versions, tmp_path: Path) -> None:
    v1, v2, _ = versions
    model = [f"model={name}"]
    base = run_training(load_config(overrides(v1, tmp_path, "trainer.run_id=base", "trainer.max_steps=3",
                                              "trainer.test_at_end=false", *model)))
    init = f"trainer.init_from={base['run_dir']}"
    old = tables_after_init(v1, tmp_path, "trainer.run_id=same", init, *model)
    grown = tables_after_init(v2, tmp_path, "trainer.run_id=grown", init, *model)
    assert set(grown) == set(old) and old
    item_rows = read_manifest(v1).num_items + 1
    assert any(grown[k].shape[0] > old[k].shape[0] == item_rows for k in old)  # an item table grew
    for key, table in old.items():
        assert torch.equal(grown[key][: table.shape[0]], table), key


def test_unsharded_tables_grow_too(versions, tmp_path: Path) -> None:
    v1, v2, _ = versions
    base = run_training(load_config(train_overrides(v1, tmp_path, "trainer.run_id=base", "trainer.max_steps=3",
                                                    "trainer.test_at_end=false", "trainer.sharding=replicated")))
    replicated = ("trainer.sharding=replicated", f"trainer.init_from={base['run_dir']}")
    (key, old), = tables_after_init(v1, tmp_path, "trainer.run_id=same", *replicated).items()
    grown = tables_after_init(v2, tmp_path, "trainer.run_id=grown", *replicated, "trainer.init_new_items=mean")[key]
    assert torch.equal(grown[: old.shape[0]], old)
    assert torch.allclose(grown[old.shape[0]:], old[1:].mean(0).expand(grown.shape[0] - old.shape[0], -1))


def test_new_rows_from_item_features(versions, tmp_path: Path) -> None:
    v1, v2, _ = versions
    old_items = read_manifest(v1).num_items
    # a catalogue that knows the new items' categories: give every new item the category of old item 1
    items = pq.read_table(v2 / "items.parquet")
    category = items["category"].to_numpy().copy()
    category[old_items:] = category[0]
    featured = tmp_path / "v2-featured"
    featured.mkdir()
    for name in ("manifest.json", "users.parquet", "sequences.parquet"):
        (featured / name).write_bytes((v2 / name).read_bytes())
    price = items["price"].to_numpy().copy()
    price[old_items:] = 0  # unknown: only the category speaks for the new items
    items = items.set_column(items.schema.get_field_index("category"), "category", pa.array(category))
    pq.write_table(items.set_column(items.schema.get_field_index("price"), "price", pa.array(price)),
                   featured / "items.parquet")
    base = run_training(load_config(train_overrides(v1, tmp_path, "trainer.run_id=base", "trainer.max_steps=4",
                                                    "trainer.test_at_end=false")))
    old = tables_after_init(v1, tmp_path, "trainer.run_id=same", f"trainer.init_from={base['run_dir']}")
    (key, old_table), = old.items()
    grown = tables_after_init(featured, tmp_path, "trainer.run_id=feat", f"trainer.init_from={base['run_dir']}",
                              "trainer.init_new_items=features")[key]
    same = torch.from_numpy(category[:old_items] == category[0])
    expected = old_table[1:][same].mean(0)
    assert torch.allclose(grown[old_items + 1:], expected.expand(grown.shape[0] - old_items - 1, -1), atol=1e-6)


def test_a_dataset_with_other_item_ids_is_refused(versions, tmp_path: Path) -> None:
    v1, _, other = versions
    base = run_training(load_config(train_overrides(v1, tmp_path, "trainer.run_id=base", "trainer.max_steps=2",
                                                    "trainer.test_at_end=false")))
    assert read_manifest(other).num_items > read_manifest(v1).num_items  # larger, but other ids
    with pytest.raises(ConfigError, match="not an item-prefix"):
        tables_after_init(other, tmp_path, "trainer.run_id=bad", f"trainer.init_from={base['run_dir']}")
    with pytest.raises(ConfigError, match="init_new_items"):
        tables_after_init(v1, tmp_path, "trainer.run_id=bad2", f"trainer.init_from={base['run_dir']}",
                          "trainer.init_new_items=zeros")


def test_multi_valued_features_average_over_each_code(tmp_path: Path) -> None:
    from trainer.growth import _feature_means

    genres = pa.array([[1], [1, 2], [2], [2], [1, 2], [0]], pa.list_(pa.int32()))
    pq.write_table(pa.table({"item_idx": pa.array(range(1, 7), pa.int32()), "raw_id": list("abcdef"),
                             "popularity": [1] * 6, "genres": genres}), tmp_path / "items.parquet")
    old = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])  # rows of items a, b, c
    fallback = torch.full((3, 2), -9.0)
    rows = _feature_means(old, 3, tmp_path, fallback)
    genre1, genre2 = old[[0, 1]].mean(0), old[[1, 2]].mean(0)
    assert torch.allclose(rows[0], genre2) and torch.allclose(rows[1], (genre1 + genre2) / 2)
    assert torch.equal(rows[2], fallback[2])  # only the unknown code: no evidence
