"""The model registry: ``model=<name>`` -> the model's config dataclass, its builder and the task it serves.

A model registers itself where it is defined (one encoder file)::

    @register("gru4rec", GRU4RecConfig)
    def build(config: GRU4RecConfig, num_items: int, max_len: int, device=None) -> Recommender: ...

The trainer, ``seqrec evaluate`` and ``seqrec export`` ask this registry (and the task it names); no model name
appears in them. `load_models` imports every module of the model packages (``modules.encoders``,
``modules.rankers``, ``modules.towers``) so their ``register`` calls run; a new file there is picked up without
editing any list.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MODEL_PACKAGES = ("modules.encoders", "modules.rankers", "modules.towers")
TASKS = ("retrieval", "ranking")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Args:
        name: the ``model.name`` value that selects it.
        config: keyword-only dataclass with every hyper-parameter and its default, with ``validate()`` raising
            `ValueError` naming the ``model.<key>`` to change; data-derived sizes are NOT in it.
        build: ``(config, num_items, max_len, device) -> Recommender``.
        task: ``"retrieval"`` (next-item over the catalogue) or ``"ranking"`` (score given candidates).
        features: the builder also takes ``item_features`` / ``user_features`` (`modules.contract.SideFeatures`).
    """

    name: str
    config: type
    build: Callable[..., Any]
    task: str = "retrieval"
    features: bool = False


_REGISTRY: dict[str, ModelEntry] = {}


def register(
    name: str, config: type, task: str = "retrieval", features: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``build`` under ``name`` (a second registration of a name is an error)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"model {name!r}: config must be a dataclass, got {config!r}")

    def decorate(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].build is not build:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name=name, config=config, build=build, task=task, features=features)
        return build

    return decorate


def load_models() -> None:
    """Import every module of `MODEL_PACKAGES` that exists (idempotent)."""
    for package_name in MODEL_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as exc:
            if exc.name != package_name:
                raise
            continue
        if not _beside_registry(package):
            continue
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{info.name}")


def _beside_registry(package: Any) -> bool:
    """Whether ``package`` lives in this checkout's ``modules/``: an editable install's import finder can
    resolve a model package this tree lacks to another checkout of the repository, whose models do not fit
    this tree's contract."""
    here = Path(__file__).resolve().parent
    return all(Path(p).resolve().parent == here for p in package.__path__)


def names() -> list[str]:
    """Registered model names, sorted."""
    load_models()
    return sorted(_REGISTRY)


def get(name: str) -> ModelEntry:
    """The entry for ``name``; an unknown name raises `ValueError` listing the known ones (with a hint)."""
    load_models()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"model.name={name!r} is unknown{hint}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build(
    config: Any,
    num_items: int,
    max_len: int,
    device: torch.device | str | None = None,
    item_features: Any = None,
    user_features: Any = None,
) -> Any:
    """Build the model ``config.name`` names for a catalogue of ``num_items`` and histories up to ``max_len``;
    models registered with ``features=True`` also get the dataset's side features (empty when None)."""
    entry = get(config.name)
    if not isinstance(config, entry.config):
        raise TypeError(f"model {config.name!r} needs a {entry.config.__name__}, got {type(config).__name__}")
    config.validate()
    extra = {}
    if entry.features:
        from modules.contract import SideFeatures

        extra = {"item_features": item_features or SideFeatures(), "user_features": user_features or SideFeatures()}
    return entry.build(config, num_items=num_items, max_len=max_len, device=device, **extra)
