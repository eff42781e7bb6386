"""MovieLens ratings (format ``movielens``), with the layout detected from the folder's files.

* ML-100K: ``u.data`` (tab: user item rating time), ``u.item`` (``|``, latin-1, 19 genre flags named by
  ``u.genre``) -> ``genres``, ``u.user`` (``|``: user age gender occupation zip) -> ``age``, ``gender``,
  ``occupation``.
* ML-1M: ``ratings.dat``, ``movies.dat`` (genres ``A|B``), ``users.dat`` (user gender age occupation zip), all
  ``::``-delimited. pyarrow parses single-character delimiters only, so the bytes are streamed through
  `DoubleColonStream`, which rewrites ``::`` to one byte the files never contain.
* ml-latest: ``ratings.csv`` and ``movies.csv`` (header rows, genres ``A|B``).

Ids stay strings; ratings are float32, timestamps unix seconds.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainer.data.readers.base import RawLog
from trainer.data.readers.common import (
    CsvSource,
    check_columns,
    check_present,
    coalesce,
    convert,
    csv_chunks,
    csv_header,
    drop_list_values,
    event_batch,
    first_per_key,
    require_file,
    to_float32,
    to_int64,
)
from trainer.errors import DataError

RATING_FILES = {"u.data": "100k", "ratings.dat": "1m", "ratings.csv": "latest"}
SENTINEL = b"\x1f"  # stands in for "::"; a control byte no MovieLens file contains (checked while streaming)
NO_GENRES = ("", "(no genres listed)")


def read(path: Path) -> RawLog:
    """Read a MovieLens folder (or its ratings file) into a `RawLog`, with item and user features."""
    path = Path(path)
    if path.is_file() and path.name in RATING_FILES:
        folder, layout = path.parent, RATING_FILES[path.name]
    else:
        folder = path
        layout = next((RATING_FILES[name] for name in RATING_FILES if (folder / name).is_file()), None)
        if layout is None:
            raise DataError(
                f"no MovieLens ratings file found (looked for {', '.join(RATING_FILES)})", file=path
            )
    return {"100k": _read_100k, "1m": _read_1m, "latest": _read_latest}[layout](folder)


# ----------------------------------------------------------------------------------------- layouts


def _read_100k(folder: Path) -> RawLog:
    ratings = require_file(folder / "u.data", "ML-100K ratings file u.data")
    src = CsvSource(
        ratings, delimiter="\t", column_names=("user", "item", "rating", "timestamp"), quoted=False
    )
    files = [ratings]
    items = users = None
    if (folder / "u.item").is_file():
        genre_file = require_file(folder / "u.genre", "ML-100K genre names u.genre (needed by u.item)")
        items = _items_100k(folder / "u.item", genre_file)
        files += [folder / "u.item", genre_file]
    if (folder / "u.user").is_file():
        user_src = _pipe_source(folder / "u.user", ("user", "age", "gender", "occupation", "zip"))
        users = _user_table(user_src)
        files.append(folder / "u.user")
    return RawLog("movielens", files, _events_fn(src, ("user", "item", "rating", "timestamp")), items, users)


def _read_1m(folder: Path) -> RawLog:
    ratings = require_file(folder / "ratings.dat", "ML-1M ratings file ratings.dat")
    src = _colon_source(ratings, ("user", "item", "rating", "timestamp"))
    files = [ratings]
    items = users = None
    if (folder / "movies.dat").is_file():
        movies = _read_all(_colon_source(folder / "movies.dat", ("item", "title", "genres"), "latin1"))
        items = _genre_table(movies, folder / "movies.dat")
        files.append(folder / "movies.dat")
    if (folder / "users.dat").is_file():
        users = _user_table(
            _colon_source(folder / "users.dat", ("user", "gender", "age", "occupation", "zip"))
        )
        files.append(folder / "users.dat")
    return RawLog("movielens", files, _events_fn(src, ("user", "item", "rating", "timestamp")), items, users)


def _read_latest(folder: Path) -> RawLog:
    ratings = require_file(folder / "ratings.csv", "ml-latest ratings file ratings.csv")
    names = ("userId", "movieId", "rating", "timestamp")
    src = CsvSource(ratings, include=names)
    check_columns(csv_header(src), names, ratings)
    files = [ratings]
    items = None
    if (folder / "movies.csv").is_file():
        movie_src = CsvSource(folder / "movies.csv", include=("movieId", "genres"))
        check_columns(csv_header(movie_src), movie_src.include, movie_src.path)
        movies = _read_all(movie_src).rename_columns(["item", "genres"])
        items = _genre_table(movies, movie_src.path)
        files.append(movie_src.path)
    return RawLog("movielens", files, _events_fn(src, names), items, None)


# ----------------------------------------------------------------------------------------- events


def _events_fn(src: CsvSource, names: tuple[str, str, str, str]) -> Callable[[], Iterator[pa.RecordBatch]]:
    """A fresh-iterator factory over ``src``; ``names`` are its user, item, rating and timestamp columns."""
    user_col, item_col, rating_col, time_col = names

    def chunks() -> Iterator[pa.RecordBatch]:
        for offset, batch in csv_chunks(src):
            where = {"file": src.path, "offset": offset}
            user, item = batch.column(user_col), batch.column(item_col)
            check_present(user, field=user_col, **where)
            check_present(item, field=item_col, **where)
            rating = convert(
                batch.column(rating_col), to_float32, field=rating_col, what="not a number", **where
            )
            timestamp = convert(
                batch.column(time_col), to_int64, field=time_col, what="not an integer", **where
            )
            yield event_batch(user, item, timestamp, rating)

    return lambda: coalesce(chunks())


# ----------------------------------------------------------------------------------------- side features


def _pipe_source(path: Path, names: tuple[str, ...]) -> CsvSource:
    return CsvSource(path, delimiter="|", column_names=names, encoding="latin1", quoted=False)


def _read_all(src: CsvSource) -> pa.Table:
    """A small side file, whole."""
    return pa.Table.from_batches([batch for _, batch in csv_chunks(src)]).combine_chunks()


def _user_table(src: CsvSource) -> pa.Table:
    """``user`` + ``age`` (numeric), ``gender``, ``occupation`` (categorical); zip codes are left out."""
    table = _read_all(src)
    user = table["user"].chunk(0)
    check_present(user, file=src.path, offset=0, field="user")
    age = convert(
        table["age"].chunk(0), to_int64, file=src.path, offset=0, field="age", what="not an integer"
    )
    features = pa.table(
        {"user": user, "age": age, "gender": table["gender"], "occupation": table["occupation"]}
    )
    return first_per_key(features, "user")


def _genre_table(movies: pa.Table, path: Path) -> pa.Table:
    """``item`` + ``genres`` list<string> from a ``A|B`` genres column."""
    item = movies["item"].combine_chunks()
    check_present(item, file=path, offset=0, field="item")
    genres = drop_list_values(pc.split_pattern(movies["genres"].combine_chunks(), "|"), NO_GENRES)
    return first_per_key(pa.table({"item": item, "genres": genres}), "item")


def _items_100k(path: Path, genre_file: Path) -> pa.Table:
    """``u.item``'s 19 genre flags as ``genres`` list<string> (names from ``u.genre``)."""
    names = _read_all(_pipe_source(genre_file, ("name", "index")))["name"].chunk(0)
    flag_cols = tuple(f"genre_{i}" for i in range(len(names)))
    src = _pipe_source(path, ("item", "title", "release_date", "video_release_date", "url", *flag_cols))
    table = _read_all(src)
    item = table["item"].chunk(0)
    check_present(item, file=path, offset=0, field="item")
    flags = np.column_stack(
        [_flag(table[col].chunk(0), path, name) for col, name in zip(flag_cols, names.to_pylist())]
    )
    rows, cols = np.nonzero(flags)  # row-major: each movie's genres in u.genre order
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(item)))]).astype(np.int32)
    genres = pa.ListArray.from_arrays(pa.array(offsets), names.take(pa.array(cols)))
    return first_per_key(pa.table({"item": item, "genres": genres}), "item")


def _flag(values: pa.Array, path: Path, name: str) -> np.ndarray:
    valid = pc.is_in(values, value_set=pa.array(["0", "1"]))
    if not pc.all(valid).as_py():
        i = pc.index(valid, False).as_py()
        raise DataError(
            f"genre flag must be 0 or 1, got {values[i].as_py()!r}", file=path, row=i + 1, field=name
        )
    return pc.equal(values, "1").to_numpy(zero_copy_only=False)


# ----------------------------------------------------------------------------------------- "::" files


def _colon_source(path: Path, names: tuple[str, ...], encoding: str = "utf8") -> CsvSource:
    """A ``::`` file; only ``movies.dat`` needs latin-1 (transcoding costs a Python pass over the bytes)."""
    require_file(path, f"ML-1M file {path.name}")
    return CsvSource(
        path,
        delimiter=SENTINEL.decode(),
        column_names=names,
        encoding=encoding,
        quoted=False,
        opener=lambda: io.BufferedReader(DoubleColonStream(path), buffer_size=1 << 20),
        shown_delimiter="::",
    )


class DoubleColonStream(io.RawIOBase):
    """The bytes of a ``::``-delimited file with every ``::`` replaced by `SENTINEL`, read in blocks.

    A run of colons at the end of a block is held back and prepended to the next block, so a ``::`` split
    across the boundary is still replaced.
    """

    def __init__(self, path: Path, block: int = 1 << 22) -> None:
        super().__init__()
        self._path, self._block = path, block
        self._file = open(path, "rb")  # closed in close()
        self._carry = b""
        self._out, self._pos = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if self._pos == len(self._out) and not self._refill():
            return 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _refill(self) -> bool:
        """Load the next rewritten block; False at the end of the file."""
        while True:
            raw = self._file.read(self._block)
            if not raw:
                self._out, self._pos, self._carry = self._carry, 0, b""
                return bool(self._out)
            if SENTINEL in raw:
                raise DataError(
                    f"contains byte {SENTINEL!r}, which this reader uses internally", file=self._path
                )
            data = self._carry + raw
            held = len(data) - len(data.rstrip(b":"))
            data, self._carry = (data[:-held], data[-held:]) if held else (data, b"")
            if data:
                self._out, self._pos = data.replace(b"::", SENTINEL), 0
                return True

    def close(self) -> None:
        self._file.close()
        super().close()
