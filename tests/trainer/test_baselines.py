"""Baselines: co-occurrence, item-KNN and EASE against hand-computed and independently solved cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from trainer.baselines import cooccurrence, ease, item_knn, train_matrix
from trainer.cli import main as seqrec

# users x (padding + items 1..3): u0 has 1, 2; u1 has 1, 3; u2 has 1, 2
X = sp.csr_matrix(np.array([[0, 1, 1, 0], [0, 1, 0, 1], [0, 1, 1, 0]], dtype=np.float32))


def test_cooccurrence_counts_users_with_both_items():
    c = cooccurrence(X)
    assert c[1].tolist() == [0, 0, 2, 1] and c[2].tolist() == [0, 2, 0, 0] and c.diagonal().sum() == 0


def test_item_knn_is_shrunk_cosine_pruned_to_k():
    s = item_knn(X, neighbours=1, shrink=0.0)
    # cos(1, 2) = 2 / sqrt(3 * 2), cos(1, 3) = 1 / sqrt(3): item 1 keeps only item 2
    assert s[1].tolist() == pytest.approx([0, 0, 2 / np.sqrt(6), 0])
    assert s[3].tolist() == pytest.approx([0, 1 / np.sqrt(3), 0, 0])
    assert ((s > 0).sum(1) <= 1).all()


def test_ease_equals_ridge_regression_of_each_item_on_the_others():
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((40, 8)) < 0.3).astype(np.float32))
    lam = 2.0
    b = ease(x, lam).numpy()
    dense = x.toarray().astype(np.float64)
    for j in range(1, 8):
        others = [i for i in range(8) if i != j]
        a = dense[:, others]
        want = np.linalg.solve(a.T @ a + lam * np.eye(7), a.T @ dense[:, j])
        assert b[others, j] == pytest.approx(want, abs=1e-5)
        assert b[j, j] == 0


def test_train_matrix_holds_the_training_part(tiny_dataset: Path):
    import pyarrow.parquet as pq

    rows = pq.read_table(tiny_dataset / "sequences.parquet").to_pylist()
    x = train_matrix(tiny_dataset, 300)
    for user in (0, 17, 599):
        assert set(x[user].indices.tolist()) == set(rows[user]["items"][: rows[user]["train_end"]])


@pytest.mark.parametrize("name", ["cooccurrence", "itemknn", "ease"])
def test_evaluate_baseline_command(name: str, tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / name
    assert seqrec(["evaluate", "--baseline", name, str(tiny_dataset), "--output", str(out),
                   "--param", "ease_lambda=50"]) == 0
    results = json.loads((out / "eval_test.json").read_text())
    assert results["baseline"] == name and results["users"] == 600 and results["ndcg@10"] > 0
    assert results["settings"]["params"]["ease_lambda"] == 50.0
    assert seqrec(["evaluate", "--baseline", name, str(tiny_dataset), "--param", "lambda=1"]) == 2
