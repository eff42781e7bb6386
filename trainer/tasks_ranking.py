"""The ranking task: score given candidates with one binary head per feedback signal (TransAct, DLRM-v2).

Trains and evaluates on ``impressions`` batches (the dataset's shown items and their labels; positives with
sampled negatives where a dataset has no impressions), follows the main head's validation AUC for early
stopping and the best checkpoint, and exports with `serving.export_ranking.export_ranker`.
`trainer.tasks.task_of` imports this module on demand.
"""

from __future__ import annotations

from trainer.tasks import Task, register_task

RANKING = register_task(
    Task(
        name="ranking",
        train_kind="impressions",
        eval_kind="impressions",
        selection_metric="auc",
        higher_is_better=True,
        evaluator="trainer.evaluation.ranking_metrics:evaluate_ranker",
        export_adapter="serving.export_ranking:export_ranker",
    )
)
