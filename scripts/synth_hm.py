"""H&M-schema data at any scale: the synthetic generator's log written as the Kaggle H&M layout
(``transactions_train.csv``, ``articles.csv``, ``customers.csv``), for `seqrec prepare --format hm`.

The real H&M sample (``../shared/data/hm-sample``) is one day: right for the schema, joins and features, too short
to evaluate on. This keeps the schema and gives the data a learnable structure (`trainer.data.synth`): items in
categories with Zipf popularity and within-category successor chains, users with a home category.

Mapping: item -> ``article_id`` (10 digits, leading zero as in H&M), its category -> ``garment_group_name`` and
``product_type_name``, ``department_name`` / ``section_name`` (coarser groupings of categories),
``product_group_name`` (category mod 19: H&M has 19 product groups), ``colour_group_name`` (a hash of the item,
50 colours), ``index_group_name``; user ->
``customer_id`` (64 hex chars) with ``age`` and ``club_member_status``; each event -> a purchase on its day
(``t_dat``) with the item's price. Purchases only (H&M logs nothing else).

  .venv/bin/python scripts/synth_hm.py --users 100000 --output data/hm-raw
  seqrec prepare --format hm data/hm-raw data/hm
  seqrec train model=two_tower data.path=data/hm
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data.synth import SynthConfig, generate

COLOURS, GROUPS = 50, 19


def _ids(prefix: str, values: list) -> pa.Array:
    """Stable 64-hex customer ids (sha256 of the synthetic id), as H&M's are."""
    return pa.array([hashlib.sha256(f"{prefix}{v}".encode()).hexdigest() for v in values])


def write_hm(raw: Path, out: Path) -> dict[str, int]:
    """Write the H&M CSVs for the synthetic raw log folder ``raw`` into ``out``; returns row counts."""
    out.mkdir(parents=True, exist_ok=True)
    items = pq.read_table(raw / "items.parquet")
    users = pq.read_table(raw / "users.parquet")
    item = items.column("item").to_pylist()
    category = np.asarray(items.column("category").to_pylist()).astype(np.int64) if pa.types.is_integer(
        items.column("category").type) else np.unique(items.column("category").to_pylist(), return_inverse=True)[1]
    article = pa.array([f"{100000000 + i:010d}" for i in range(len(item))])
    articles = pa.table({
        "article_id": article,
        "product_type_name": pa.array([f"type {c}" for c in category.tolist()]),
        "product_group_name": pa.array([f"group {c % GROUPS}" for c in category.tolist()]),
        "colour_group_name": pa.array([f"colour {(i * 2654435761) % COLOURS}" for i in range(len(item))]),
        "department_name": pa.array([f"department {c // 3}" for c in category.tolist()]),
        "index_group_name": pa.array(["Ladieswear" if c % 2 else "Menswear" for c in category.tolist()]),
        "section_name": pa.array([f"section {c // 6}" for c in category.tolist()]),
        "garment_group_name": pa.array([f"garment {c}" for c in category.tolist()]),
    })
    pacsv.write_csv(articles, out / "articles.csv")
    user = users.column("user").to_pylist()
    customers = pa.table({
        "customer_id": _ids("c", user),
        "club_member_status": pa.array(["ACTIVE" if j % 5 else "PRE-CREATE" for j in range(len(user))]),
        "fashion_news_frequency": pa.array(["Regularly" if j % 3 == 0 else "NONE" for j in range(len(user))]),
        "age": users.column("age"),
    })
    pacsv.write_csv(customers, out / "customers.csv")
    customer_of = dict(zip(user, customers.column("customer_id").to_pylist()))
    article_of = dict(zip(item, article.to_pylist()))
    price_of = dict(zip(item, items.column("price").to_pylist()))
    rows = 0
    with pacsv.CSVWriter(out / "transactions_train.csv", pa.schema([
        ("t_dat", pa.string()), ("customer_id", pa.string()), ("article_id", pa.string()),
        ("price", pa.float64()), ("sales_channel_id", pa.int64()),
    ])) as writer:
        for batch in pq.ParquetFile(raw / "events.parquet").iter_batches(batch_size=200_000):
            u, i = batch.column("user").to_pylist(), batch.column("item").to_pylist()
            days = pc.strftime(pc.cast(pc.multiply(batch.column("timestamp"), 1000), pa.timestamp("ms")), "%Y-%m-%d")
            writer.write_table(pa.table({
                "t_dat": days,
                "customer_id": pa.array([customer_of[x] for x in u]),
                "article_id": pa.array([article_of[x] for x in i]),
                "price": pa.array([price_of[x] / 1000.0 for x in i]),
                "sales_channel_id": pa.array([1 + len(x) % 2 for x in u], pa.int64()),
            }))
            rows += len(u)
    return {"transactions": rows, "articles": len(articles), "customers": len(customers)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="folder for the three H&M CSV files")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--categories", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.output.exists() and any(args.output.iterdir()):
        parser.error(f"{args.output} exists and is not empty; choose a new folder")
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw"
        generate(SynthConfig(users=args.users, items=args.items, categories=args.categories, seed=args.seed), raw,
                 progress=True)
        counts = write_hm(raw, args.output)
    print(f"wrote {args.output}: {counts['transactions']} transactions, {counts['articles']} articles, "
          f"{counts['customers']} customers (H&M layout; seqrec prepare --format hm {args.output} DATASET)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
