"""Where an export goes: a local folder, or an `s3://` prefix written with boto3.

boto3 takes its credentials and region from the environment, its endpoint, retries and timeouts
from the config's `s3` section (etl.s3_settings); nothing secret passes through here.
Published shards carry their row count and sha256 (local: recomputed; S3: object metadata), so
a resumed export can list them in the manifest without downloading them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional, Protocol

import pyarrow.parquet as pq

from etl.s3_settings import S3Settings

DELETE_BATCH = 1000  # the most keys one S3 DeleteObjects request takes


class ExportTarget(Protocol):
    def read_json(self, name: str) -> Optional[dict]: ...
    def exists(self, name: str) -> bool: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def put_file(self, local: Path, name: str) -> None: ...
    def stats(self, name: str) -> Optional[dict]: ...
    def list_files(self) -> list[str]: ...
    def export_written(self, name: str) -> bool: ...
    def remove(self, names: list[str]) -> None: ...


def target_for(out: str, settings: S3Settings) -> ExportTarget:
    if out.startswith("s3://"):
        return S3Target(out, settings)
    if "://" in out:
        raise ValueError(f"--out: only local folders and s3:// are supported, not {out}")
    return LocalTarget(Path(out))


def file_stats(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"rows": pq.ParquetFile(path).metadata.num_rows, "bytes": os.path.getsize(path),
            "sha256": digest.hexdigest()}


class LocalTarget:
    def __init__(self, root: Path) -> None:
        self.root = root

    def read_json(self, name: str) -> Optional[dict]:
        path = self.root / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def write_bytes(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)

    def put_file(self, local: Path, name: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(local), str(path))

    def stats(self, name: str) -> Optional[dict]:
        path = self.root / name
        return file_stats(path) if path.is_file() else None

    def list_files(self) -> list[str]:
        """Every file below the folder; a link to a folder counts as a file (it is not followed)."""
        names = []
        for folder, subfolders, files in os.walk(self.root):
            linked = [sub for sub in subfolders if os.path.islink(os.path.join(folder, sub))]
            names += [Path(folder, name).relative_to(self.root).as_posix() for name in files + linked]
        return sorted(names)

    def export_written(self, name: str) -> bool:
        return False  # a local file carries no mark of its writer

    def remove(self, names: list[str]) -> None:
        for name in names:
            (self.root / name).unlink()
        emptied = {(self.root / name).parent for name in names} - {self.root}
        for folder in sorted(emptied, key=lambda path: len(path.parts), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()


class S3Target:
    def __init__(self, uri: str, settings: S3Settings) -> None:
        import boto3

        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"--out: no bucket in {uri}")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client("s3", **settings.boto3_client_kwargs())

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read_json(self, name: str) -> Optional[dict]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def exists(self, name: str) -> bool:
        return self._head(name) is not None

    def _head(self, name: str) -> Optional[dict]:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def write_bytes(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def put_file(self, local: Path, name: str) -> None:
        stats = file_stats(local)
        self.client.upload_file(str(local), self.bucket, self._key(name), ExtraArgs={
            "Metadata": {"rows": str(stats["rows"]), "sha256": stats["sha256"]}})
        local.unlink()

    def stats(self, name: str) -> Optional[dict]:
        head = self._head(name)
        if head is None:
            return None
        meta = head.get("Metadata", {})
        return {"rows": int(meta["rows"]), "bytes": int(head["ContentLength"]), "sha256": meta["sha256"]}

    def list_files(self) -> list[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
        return sorted(item["Key"][len(start):] for page in pages for item in page.get("Contents", []))

    def export_written(self, name: str) -> bool:
        """Whether the object carries the row count and checksum an export uploads each shard with."""
        head = self._head(name)
        return head is not None and {"rows", "sha256"} <= set(head.get("Metadata", {}))

    def remove(self, names: list[str]) -> None:
        for first in range(0, len(names), DELETE_BATCH):
            batch = [{"Key": self._key(name)} for name in names[first:first + DELETE_BATCH]]
            deleted = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if deleted.get("Errors"):
                failed = deleted["Errors"][0]
                raise RuntimeError(f"s3://{self.bucket}/{failed['Key']}: not deleted: {failed.get('Code')} "
                                   f"{failed.get('Message', '')}".rstrip())
