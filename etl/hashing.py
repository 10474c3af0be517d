"""LAION's sample hash: signed int64 mmh3.hash64 of (URL or '') + (TEXT or '').

Spark's built-in hashes do not match it, so the engines compute it with a vectorised
pandas UDF (`laion_hash_udf`), registered for SQL as `laion_hash(url, text)`.
"""

from __future__ import annotations

from typing import Iterable, Optional

import mmh3
import numpy as np
import pandas as pd

SQL_FUNCTION_NAME = "laion_hash"


def laion_hash(url: Optional[str], text: Optional[str]) -> int:
    """LAION's hash of one sample; None counts as the empty string."""
    return mmh3.hash64(((url or "") + (text or "")).encode("utf-8"))[0]


def laion_hashes(urls: Iterable[Optional[str]], texts: Iterable[Optional[str]]) -> np.ndarray:
    """LAION's hash for many samples at once, as an int64 array."""
    hash64 = mmh3.hash64
    return np.fromiter(
        (hash64(((u or "") + (t or "")).encode("utf-8"))[0] for u, t in zip(urls, texts)),
        dtype=np.int64,
    )


def _hash_series(urls: pd.Series, texts: pd.Series) -> pd.Series:
    return pd.Series(laion_hashes(urls.tolist(), texts.tolist()), index=urls.index)


def register_laion_hash(spark) -> None:
    """Make `laion_hash(url, text)` callable from Spark SQL on this session."""
    from pyspark.sql.functions import pandas_udf

    spark.udf.register(SQL_FUNCTION_NAME, pandas_udf(_hash_series, "bigint"))
