"""Readers turning raw logs of every supported format into a `RawLog` (see `base`).

Each format lives in its own module exposing ``read(path, **options) -> RawLog``; `open_reader` picks it by name.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from trainer.data.readers.base import RawLog
from trainer.errors import ConfigError

# format name -> module implementing ``read(path, **options)``
FORMATS: dict[str, str] = {
    "sasrec": "trainer.data.readers.sasrec",
    "s3rec": "trainer.data.readers.s3rec",
    "movielens": "trainer.data.readers.movielens",
    "amazon": "trainer.data.readers.amazon",
    "hm": "trainer.data.readers.hm",
    "events": "trainer.data.readers.generic",
    "synthetic": "trainer.data.readers.synthetic",
    "kuairand": "trainer.data.readers.kuairand",
    "movielens-actions": "trainer.data.readers.movielens_actions",
    "taobao": "trainer.data.readers.taobao",
}


def open_reader(format: str, path: str | Path, **options: Any) -> RawLog:
    """Open ``path`` (a file or folder) with the reader for ``format``; options are format-specific."""
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    module = importlib.import_module(FORMATS[format])
    try:
        return module.read(Path(path), **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigError(f"format {format!r} does not take that option ({exc})") from exc
