"""Files this package builds for the JVM and caches by content: the `--py-files` zip, the
`laion_hash` jar, job scripts copied out of a zip install; and pyspark's own Spark home.

A cached file is named by the digest of what it holds, so two versions of the code never share
one and the same code always finds its own; written atomically and byte-for-byte the same for
the same content (sorted zip members, fixed timestamps), so a rebuild never looks like a release.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Mapping

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say


def spark_home() -> Path:
    """pyspark's own folder: a Spark home with bin/spark-submit, bin/spark-class and the jars."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def cache_folder() -> Path:
    """Where the shipped zip (and, from a zip install, the job scripts) are written."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "laion-etl"


def named_by_content(folder: Path, name: str, data: bytes) -> Path:
    """`folder/name` with the digest of `data` added to the name: two submits of different code
    never share a file, and the same code always gets the same one."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    stem, dot, suffix = name.partition(".")
    return folder / f"{stem}-{digest}{dot}{suffix}"


def write_by_content(folder: Path, name: str, data: bytes) -> Path:
    """`data` written under its `named_by_content` name, unless it is there already."""
    path = named_by_content(folder, name, data)
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{path.name}.{os.getpid()}.partial"
        partial.write_bytes(data)
        os.replace(partial, path)
    return path


def write_stable_zip(out: Path, members: Mapping[str, bytes]) -> None:
    """A zip (or jar) of `members` written atomically, the same bytes for the same members."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name])
    os.replace(partial, out)
