"""LAION's sample hash: signed int64 mmh3.hash64 of (URL or '') + (TEXT or '').

`laion_hash(url, text)` is the reference for one sample (mmh3 itself). Many samples are hashed
by `laion_hash_arrow` over Arrow string arrays: MurmurHash3_x64_128 (first 64 bits, signed, seed
0, exactly what `mmh3.hash64(...)[0]` returns) compiled with numba over the arrays' offset, data
and validity buffers, so no Python object is made per row and the URL+TEXT concatenations are not
materialised as a column (one row's at a time, in a reused scratch buffer). Where numba cannot
be imported the same function falls back to a loop over mmh3 (correct, several times slower);
`hash_backend()` says which one runs.

The engines call it through the pandas UDF registered as `laion_hash(url, text)` for SQL, and
`laion_hash_batches` is the same hash for `mapInArrow`, which skips the pandas conversion.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Iterator, Optional, Union

import mmh3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

SQL_FUNCTION_NAME = "laion_hash"
# LAION_ETL_HASH_BACKEND=python forces the mmh3 loop (tests use it to compare the two backends).
BACKEND_ENV = "LAION_ETL_HASH_BACKEND"

ArrayLike = Union[pa.Array, pa.ChunkedArray, Iterable[Optional[str]]]


def laion_hash(url: Optional[str], text: Optional[str]) -> int:
    """LAION's hash of one sample; None counts as the empty string."""
    return mmh3.hash64(((url or "") + (text or "")).encode("utf-8"))[0]


def laion_hashes(urls: ArrayLike, texts: ArrayLike) -> np.ndarray:
    """LAION's hash for many samples at once, as an int64 array.

    Takes Python iterables of str/None or Arrow string arrays. A string that is not valid
    Unicode (a lone surrogate) raises UnicodeEncodeError, as `laion_hash` does.
    """
    return laion_hash_arrow(_as_arrow(urls), _as_arrow(texts)).to_numpy()


def laion_hash_arrow(urls: Union[pa.Array, pa.ChunkedArray], texts: Union[pa.Array, pa.ChunkedArray]) -> pa.Array:
    """LAION's hash of each (url, text) pair of two aligned Arrow string arrays, as int64.

    Any string or binary Arrow type works (string, large_string, string_view, binary ...);
    nulls count as empty strings; the result has no nulls.
    """
    urls, texts = _flat(urls), _flat(texts)
    if len(urls) != len(texts):
        raise ValueError(f"laion_hash_arrow: {len(urls)} urls but {len(texts)} texts")
    out = np.empty(len(urls), dtype=np.int64)
    if len(out):
        kernel = _kernel()
        if kernel is None:
            _python_hashes(urls, texts, out)
        else:
            kernel(*_buffers(urls), *_buffers(texts), out)
    return pa.array(out)


def laion_hash_batches(url_column: str = "url", text_column: str = "text", hash_column: str = "hash"):
    """A `mapInArrow` function that appends `hash_column` (bigint) to each batch:

        schema = StructType(df.schema.fields + [StructField("hash", LongType())])
        df.mapInArrow(laion_hash_batches("url", "text"), schema)

    It hashes the Arrow batches themselves, without the Arrow -> pandas -> Arrow round trip of a
    pandas UDF; on Sail that round trip alone costs more than the hash (bench/hash_bench.py).
    """
    def append_hash(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            hashes = laion_hash_arrow(batch.column(url_column), batch.column(text_column))
            yield pa.RecordBatch.from_arrays([*batch.columns, hashes], names=[*batch.schema.names, hash_column])

    return append_hash


def _hash_series(urls: pd.Series, texts: pd.Series) -> pd.Series:
    hashes = laion_hash_arrow(_series_to_arrow(urls), _series_to_arrow(texts))
    return pd.Series(hashes.to_numpy(), index=urls.index)


def register_laion_hash(spark) -> None:
    """Make `laion_hash(url, text)` callable from Spark SQL on this session."""
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import LongType

    # A type object, not the string "bigint": Spark Connect parses a type string on the process's
    # active session, which need not be `spark` (and may be on a server that is gone).
    spark.udf.register(SQL_FUNCTION_NAME, pandas_udf(_hash_series, LongType()))


# --- conversions -------------------------------------------------------------------------------

def _as_arrow(values: ArrayLike) -> Union[pa.Array, pa.ChunkedArray]:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, pd.Series):
        return _series_to_arrow(values)
    if not isinstance(values, (list, tuple, np.ndarray)):
        values = list(values)
    return pa.array(values, type=pa.large_string())


def _series_to_arrow(series: pd.Series) -> pa.Array:
    # A UDF's string column arrives as Python str objects (None for null). large_string keeps a
    # batch over 2 GiB of text legal.
    return pa.Array.from_pandas(series, type=pa.large_string())


def _flat(values: Union[pa.Array, pa.ChunkedArray]) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        return values
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.string())
    if pa.types.is_dictionary(kind):
        return _flat(values.dictionary_decode())
    # string_view / binary_view: one copy into offsets + data.
    return pc.cast(values, pa.large_binary() if pa.types.is_binary_view(kind) else pa.large_string())


def _read_only(array: np.ndarray) -> np.ndarray:
    # numba compiles one specialisation per writable/read-only mix: hand it read-only arrays only.
    array.flags.writeable = False
    return array


_NO_BYTES = _read_only(np.zeros(1, dtype=np.uint8))


def _buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(offsets as int64, data bytes, validity bitmap bytes or empty, bit offset) of an array."""
    validity, offsets, data = values.buffers()[:3]
    start, count = values.offset, len(values)
    wide = pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)
    offsets = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32)[start:start + count + 1]
    offsets = _read_only(offsets.astype(np.int64, copy=False))
    data = _NO_BYTES if data is None or data.size == 0 else _read_only(np.frombuffer(data, dtype=np.uint8))
    has_nulls = validity is not None and values.null_count
    bitmap = _read_only(np.frombuffer(validity, dtype=np.uint8)) if has_nulls else _NO_BYTES[:0]
    return offsets, data, bitmap, start


def _python_hashes(urls: pa.Array, texts: pa.Array, out: np.ndarray) -> None:
    """The fallback: mmh3 over each joined value (nulls as empty) in a Python loop."""
    empty = pa.scalar(b"", pa.large_binary())
    joined = pc.binary_join_element_wise(urls.cast(pa.large_binary()), texts.cast(pa.large_binary()), empty,
                                         null_handling="replace", null_replacement=b"")
    hash64 = mmh3.hash64
    out[:] = np.fromiter((hash64(value)[0] for value in joined.to_numpy(zero_copy_only=False)),
                         dtype=np.int64, count=len(out))


_BACKEND: Optional[tuple] = None


def _kernel():
    """The compiled kernel, or None for the mmh3 loop; numba is imported on first use."""
    global _BACKEND
    if _BACKEND is None:
        if os.environ.get(BACKEND_ENV, "").lower() == "python":
            _BACKEND = (None, "python")
        else:
            try:
                from etl.engine.murmur3 import murmur3_x64_64_pairs

                _BACKEND = (murmur3_x64_64_pairs, "numba")
            except ImportError:
                log.warning("numba is not installed: hashing with the mmh3 loop (several times slower)")
                _BACKEND = (None, "python")
    return _BACKEND[0]


def hash_backend() -> str:
    """`numba` (the compiled kernel) or `python` (the mmh3 loop)."""
    _kernel()
    return _BACKEND[1]
