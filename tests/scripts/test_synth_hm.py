"""scripts/synth_hm.py writes the H&M layout that `seqrec prepare --format hm` reads, features included."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import REPO
from trainer.data.prepare import PrepareConfig, prepare
from trainer.data.schema import read_manifest
from trainer.data.synth import SynthConfig, generate


def test_synthetic_log_in_the_hm_layout_prepares_with_its_features(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("synth_hm", REPO / "scripts" / "synth_hm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generate(SynthConfig(users=300, items=120, categories=8, seed=1, mean_length=10, max_length=40), tmp_path / "raw",
             progress=False)
    counts = module.write_hm(tmp_path / "raw", tmp_path / "hm")
    assert counts["articles"] == 120 and counts["customers"] == 300 and counts["transactions"] > 300
    header = (tmp_path / "hm" / "transactions_train.csv").read_text().splitlines()[0]
    assert header == '"t_dat","customer_id","article_id","price","sales_channel_id"'
    prepare(PrepareConfig(format="hm", input=tmp_path / "hm", output=tmp_path / "dataset"))
    manifest = read_manifest(tmp_path / "dataset")
    assert manifest.counts["users"] == 300 and manifest.counts["interactions"] == counts["transactions"]
    assert {"garment_group_name", "colour_group_name", "product_group_name"} <= set(manifest.features["items"])
    assert {"age", "club_member_status"} <= set(manifest.features["users"])
