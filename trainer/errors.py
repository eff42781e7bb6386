"""User-facing errors: one clear line that names the file, row/user and field.

`seqrec` commands catch `SeqrecError` and print `error: <message>` with exit code 2 (a traceback only
with `--verbose`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class SeqrecError(Exception):
    """An error caused by the user's input or configuration, reported as one line."""


class DataError(SeqrecError):
    """Bad input data: names the file and, where known, the row (1-based line), user and field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        user: str | None = None,
        field: str | None = None,
    ) -> None:
        parts = []
        if file is not None:
            parts.append(str(file))
        if row is not None:
            parts.append(f"row {row}")
        if user is not None:
            parts.append(f"user {user!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        where = ", ".join(parts)
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.row, self.user, self.field = file, row, user, field


class ConfigError(SeqrecError):
    """A bad setting; the message names the key to change."""


def require_run_folder(path: str | Path) -> Path:
    """``path`` if it exists, else a `ConfigError` saying so (before a command looks for checkpoints in it)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: run folder does not exist (expected outputs/<experiment>/<run_id>, as printed "
                          "by `seqrec train`)")
    return path
