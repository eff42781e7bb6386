"""Tasks: what differs between next-item retrieval and candidate ranking, asked by the trainer, evaluate and export.

A `Task` owns the loader kinds it trains and evaluates on, its evaluator, the selection metric (early stopping
and the best checkpoint) and the export adapter. A registered model names its task (`modules.registry`); the
trainer, ``seqrec evaluate`` and ``seqrec export`` look it up here and never branch on a model's name.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from modules import registry


@dataclasses.dataclass(frozen=True)
class Task:
    """One task.

    Args:
        name: ``retrieval`` | ``ranking`` (`modules.registry.TASKS`).
        train_kind: loader kind of training batches (`modules.batch.KINDS`).
        eval_kind: loader kind of evaluation batches.
        selection_metric: the metric key that early stopping and the best checkpoint follow.
        higher_is_better: direction of ``selection_metric``.
        evaluator: import path ``module:function`` of ``(model, loader, manifest, eval_cfg, env, per_user_path,
            progress) -> metrics`` (a path, so that importing this file pulls in neither torch nor serving).
        export_adapter: import path ``module:function`` of ``(trained_run, export_config) -> metadata``.
    """

    name: str
    train_kind: str
    eval_kind: str
    selection_metric: str
    higher_is_better: bool
    evaluator: str
    export_adapter: str

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run this task's evaluator."""
        return _resolve(self.evaluator)(*args, **kwargs)

    def export(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run this task's export adapter."""
        return _resolve(self.export_adapter)(*args, **kwargs)

    def improved(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of the selection metric beats ``best`` (None: nothing yet)."""
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


RETRIEVAL = Task(
    name="retrieval",
    train_kind="causal",
    eval_kind="last",
    selection_metric="ndcg@10",
    higher_is_better=True,
    evaluator="trainer.evaluate:evaluate_model",
    export_adapter="serving.export:export_retrieval",
)

TASKS: dict[str, Task] = {RETRIEVAL.name: RETRIEVAL}


def register_task(task: Task) -> Task:
    """Add a task (the ranking task registers itself where its evaluator lives)."""
    TASKS[task.name] = task
    return task


def task_of(model_cfg: Any) -> Task:
    """The task of the registered model ``model_cfg.name``."""
    name = registry.get(model_cfg.name).task
    if name not in TASKS:  # tasks defined next to their evaluators register on import
        importlib.import_module(f"trainer.tasks_{name}")
    return TASKS[name]


def _resolve(path: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
