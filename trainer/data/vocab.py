"""Raw id -> integer code encoding: an incremental vocabulary keyed by 64-bit string fingerprints.

`prepare` encodes users, items and actions chunk by chunk with one `Vocabulary` each; codes follow the order of
first appearance in the input, so a rerun on the same log gives the same codes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Vocabulary:
    """Incremental string -> int code map; codes follow first appearance in the input.

    Fast path, vectorised: each chunk is dictionary-encoded (C++ hashing), then each of its distinct strings gets
    a 64-bit fingerprint, looked up in a sorted array of known fingerprints; the strings behind every match are
    compared, so a fingerprint collision is detected rather than merging two ids. On a collision (or with
    ``exact=True``) the vocabulary switches to an exact dict lookup, one per unique value of each chunk.
    """

    def __init__(self, exact: bool = False) -> None:
        self._keys = np.zeros(0, np.uint64)  # sorted fingerprints
        self._codes = np.zeros(0, np.int64)  # code of each key
        self._chunks: list[pa.Array] = []  # values in code order
        self._size = 0
        self._index: dict[str, int] | None = {} if exact else None

    def __len__(self) -> int:
        return self._size

    def encode(self, column: pa.Array) -> np.ndarray:
        """Codes (int64) of a string column's values, adding unseen values at the end."""
        column = column.cast(pa.string()) if column.type != pa.string() else column
        if self._index is None:
            codes = self._encode_hashed(column)
            if codes is not None:
                return codes
            self._index = dict(zip(self.raw_ids().to_pylist(), range(self._size)))
        return self._encode_exact(column)

    def _encode_hashed(self, column: pa.Array) -> np.ndarray | None:
        encoded = pc.dictionary_encode(column)  # distinct values in order of first appearance (C++ hashing)
        values = encoded.dictionary
        keys = _fingerprint(values)
        if len(np.unique(keys)) != len(keys):
            return None  # two different strings of this chunk share a fingerprint
        pos = np.searchsorted(self._keys, keys)
        found = np.zeros(len(keys), bool)
        if len(self._keys):
            found = self._keys[np.minimum(pos, len(self._keys) - 1)] == keys
        codes = np.empty(len(keys), np.int64)
        codes[found] = self._codes[pos[found]]
        if found.any():
            known = pa.chunked_array(self._chunks).take(pa.array(codes[found]))
            if not pc.all(pc.equal(known, values.filter(pa.array(found)))).as_py():
                return None  # a new string has the fingerprint of a known one
        new = np.flatnonzero(~found)
        codes[new] = np.arange(self._size, self._size + len(new))
        by_key = new[np.argsort(keys[new])]
        self._keys = np.insert(self._keys, pos[by_key], keys[by_key])
        self._codes = np.insert(self._codes, pos[by_key], codes[by_key])
        self._add(values.filter(pa.array(~found)))
        return codes[encoded.indices.to_numpy(zero_copy_only=False)]

    def _encode_exact(self, column: pa.Array) -> np.ndarray:
        encoded = pc.dictionary_encode(column)  # dictionary in order of first appearance within the chunk
        keys = encoded.dictionary.to_pylist()
        codes = np.array([self._index.get(key, -1) for key in keys], dtype=np.int64)
        new = np.flatnonzero(codes < 0)
        if new.size:
            codes[new] = np.arange(self._size, self._size + new.size)
            self._index.update(zip([keys[j] for j in new], codes[new].tolist()))
            self._add(encoded.dictionary.take(pa.array(new)))
        return codes[encoded.indices.to_numpy(zero_copy_only=False)]

    def _add(self, values: pa.Array) -> None:
        if len(values):
            self._chunks.append(values)
            self._size += len(values)

    def raw_ids(self) -> pa.Array:
        """All values, indexed by code."""
        return pa.concat_arrays(self._chunks) if self._chunks else pa.array([], pa.string())

    def names(self) -> list[str]:
        return self.raw_ids().to_pylist()


def _fingerprint(column: pa.Array) -> np.ndarray:
    """64-bit polynomial hash of each string, vectorised over the bytes (wrapping uint64 arithmetic)."""
    offsets = np.frombuffer(column.buffers()[1], np.int32, len(column) + 1, column.offset * 4).astype(np.int64)
    data_buffer = column.buffers()[2]
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]] if data_buffer else np.zeros(0, np.uint8)
    offsets -= offsets[0]
    lengths = np.diff(offsets)
    prime = np.uint64(0x100000001B3)
    powers = np.cumprod(np.full(int(lengths.max(initial=0)) + 1, prime, np.uint64))
    position = np.arange(len(data)) - np.repeat(offsets[:-1], lengths)
    total = np.concatenate(([np.uint64(0)], np.cumsum((data + np.uint64(1)) * powers[position], dtype=np.uint64)))
    return _mix(total[offsets[1:]] - total[offsets[:-1]] + lengths.astype(np.uint64))


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the polynomial hash over all 64 bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))
