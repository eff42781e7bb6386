"""The outputs of ``seqrec benchmark``: one results table (Markdown + CSV) and one comparison report per dataset.

Each row is a (dataset, model): the mean over its seeds with a 95% t interval (a single seed or a baseline shows
the mean only), the protocol and split policy it was evaluated under, and the published anchor of the grid file
(value and source) where one is known.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.evaluation.results import read_results
from trainer.evaluation.significance import seed_interval

TABLE_METRICS = ("ndcg@10", "hr@10", "mrr", "coverage@10", "gini@10", "avg_pop@10", "novelty@10")


def _rows(grid: Any, entries: list[tuple[str, Any, int, Path]]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for dataset, model, _seed, path in entries:
        if path.is_file():
            grouped.setdefault((dataset, model.name), []).append(read_results(path))
    rows = []
    for (dataset, model), results in grouped.items():
        row: dict[str, Any] = {"dataset": dataset, "model": model, "seeds": len(results)}
        row.update({k: results[0][k] for k in ("split_policy", "protocol")})
        for m in TABLE_METRICS:
            mean, low, high = seed_interval([r.get(m, float("nan")) for r in results])
            row[m], row[f"{m}_ci"] = mean, (high - low) / 2
        anchor = grid.anchors.get(dataset, {}).get(model, {})
        row["anchor_ndcg@10"] = anchor.get("ndcg@10", "")
        row["anchor_hr@10"] = anchor.get("hr@10", "")
        row["anchor_source"] = anchor.get("source", "")
        rows.append(row)
    return rows


def _cell(row: dict[str, Any], m: str) -> str:
    value, half = row[m], row[f"{m}_ci"]
    fmt = ".1f" if m == "avg_pop@10" else ".4f"
    return f"{value:{fmt}} ± {half:{fmt}}" if half else f"{value:{fmt}}"


def write_table(grid: Any, entries: list[tuple[str, Any, int, Path]]) -> str:
    """Write ``results.md`` and ``results.csv`` into the grid's output folder; returns the Markdown."""
    rows = _rows(grid, entries)
    head = ["dataset", "model", "seeds", "split", "protocol", *TABLE_METRICS, "published NDCG@10 / HR@10"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in rows:
        anchor = f"{r['anchor_ndcg@10']} / {r['anchor_hr@10']} ({r['anchor_source']})" if r["anchor_source"] else ""
        cells = [r["dataset"], r["model"], str(r["seeds"]), r["split_policy"], r["protocol"]]
        lines.append("| " + " | ".join([*cells, *(_cell(r, m) for m in TABLE_METRICS), anchor]) + " |")
    markdown = "\n".join(lines) + "\n"
    grid.output.mkdir(parents=True, exist_ok=True)
    (grid.output / "results.md").write_text(markdown)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (grid.output / "results.csv").write_text(buffer.getvalue())
    return markdown


def write_reports(grid: Any, cells: list[tuple[str, Any, int]], folder_of: Callable[..., Path], name: str) -> None:
    """One ``seqrec compare`` report per dataset (``<output>/<dataset>/report``), the first model as reference."""
    from trainer.compare import check_comparable, load_group
    from trainer.evaluation.report import write_report

    metrics = ["ndcg@10", "hr@10", "mrr", "novelty", "serendipity"]
    results_name = name.removeprefix("eval_")
    for dataset in grid.datasets:
        runs: dict[str, list[Path]] = {}
        for d, model, seed in cells:
            folder = folder_of(d, model, seed)
            if d == dataset and (folder / f"{name}.json").is_file():
                runs.setdefault(model.name, []).append(folder)
        if len(runs) < 2:
            continue
        groups = [load_group(m, folders, results_name, metrics) for m, folders in runs.items()]
        check_comparable(groups)
        out = grid.output / dataset / "report"
        out.mkdir(parents=True, exist_ok=True)
        write_report(groups, metrics, out)
