"""Export filtered wide-table rows as parquet shards that img2dataset reads as they are.

Layout (the design's "Export layout"): `<out>/shards/part-00000.parquet …` (img2dataset's
`--url_list <out>/shards`), `<out>/manifest.json`, `<out>/_SUCCESS`; nothing else where
img2dataset globs. Columns: `URL`, `TEXT` and the chosen extra columns.

Determinism without collecting rows: the rows are ordered by (hash, URL, TEXT, extra columns);
the driver collects only row counts per hash bucket (the top bits of the hash), turns them into
offsets, and the engine numbers rows within buckets, so every row's global index — hence its
shard, `index // rows_per_shard` — is the same in every run over the same table version. The
engine writes one file per shard into a staging folder; they are then renamed (or uploaded with
boto3 for `s3://`) to their final zero-padded names, the manifest is written, `_SUCCESS` last.

Re-running the same export (same table version, filter, columns and shard size) is a no-op; an
interrupted one resumes: a complete staging folder is not rewritten, finished shards are kept.
Everything that can refuse an export (the request, the destination: etl.export.destination) is
decided before any engine starts, and the table version is fixed then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from pyspark.sql import Window
from pyspark.sql import functions as F

from etl.project.config import Config
from etl.export.destination import (MANIFEST, SHARDS_DIR, STAGING_DONE, SUCCESS, check_out, claim, discard_staging,
                                    staging_root)
from etl.engine.paths import engine_path
from etl.export.filters import ResolvedFilter
from etl.export.object_store import ExportTarget, file_stats, target_for
from etl.progress import step
from etl.project.project import Project
from etl.project.tables import DATABASE
from etl.s3_settings import S3Settings
from etl.warehouse.store import table_store

log = logging.getLogger(__name__)

DEFAULT_COLUMNS = ("similarity", "hash", "punsafe", "pwatermark", "aesthetic_score", "language")
BUCKET_BITS = 12  # 4,096 hash buckets: small enough to collect, fine enough to spread the work
SHARD_COLUMN = "_shard"


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class ExportRequest:
    filter: ResolvedFilter
    out: str
    rows_per_shard: int
    columns: tuple[str, ...]
    overwrite: bool = False  # replace what earlier exports wrote in `out`


@dataclass(frozen=True)
class ExportPlan:
    """An export fixed before any engine starts: what was asked, the table version it reads, its id."""
    request: ExportRequest
    source: dict
    identity: str


@dataclass(frozen=True)
class ExportResult:
    out: str
    rows: int
    shards: int
    skipped: bool  # the same export was already complete
    manifest: dict


def plan_export(project: Project, config: Config, request: ExportRequest,
                pipeline_folders: Mapping[str, str]) -> ExportPlan:
    """Check the request, fix the table version and claim the destination: every refusal happens
    here, before any engine starts. The export stays out of `pipeline_folders` (folder -> what it is)."""
    validate_request(project, config, request, pipeline_folders)
    path = project.wide_table.path(config)
    source = {"table": f"{DATABASE}.{project.wide_table.name}", "path": path, "format": config.format,
              "version": table_store(config).version(path)}
    plan = ExportPlan(request, source, export_id(source, request))
    claim(target_for(request.out, S3Settings.from_config(config)), request.out, plan.identity, request.overwrite)
    return plan


def validate_request(project: Project, config: Config, request: ExportRequest,
                     pipeline_folders: Mapping[str, str]) -> None:
    """Refuse a bad request before any engine starts."""
    wide = project.wide_table.contract.column_types
    unknown = [c for c in request.columns if c not in wide]
    if unknown:
        raise ExportError(f"--columns: unknown column {unknown[0]!r} (known: {', '.join(sorted(wide))})")
    if request.rows_per_shard < 1:
        raise ExportError("--rows-per-shard must be at least 1")
    check_out(request.out, pipeline_folders)
    path = project.wide_table.path(config)
    if not table_store(config).exists(path):
        raise ExportError(f"{DATABASE}.{project.wide_table.name} is not built yet at {path}: run build first")


def export_id(source: dict, request: ExportRequest) -> str:
    """Names one export: same table version, filter, columns and shard size, same id."""
    key = json.dumps({"source": source, "where": request.filter.where, "columns": list(request.columns),
                      "rows_per_shard": request.rows_per_shard}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def export_shards(spark, config: Config, plan: ExportPlan) -> ExportResult:
    request, source, identity = plan.request, plan.source, plan.identity
    target = target_for(request.out, S3Settings.from_config(config))
    existing = target.read_json(MANIFEST)  # the destination is claimed: a manifest there is this export's
    if existing and target.exists(SUCCESS):
        log.info("%s already holds this export (%s); nothing to do", request.out, identity)
        return ExportResult(request.out, existing["totals"]["rows"], existing["totals"]["shards"], True, existing)
    staging = staging_root(request.out) / identity
    if not (staging / STAGING_DONE).exists():
        with step(f"[export] writing shards of {source['table']} where {request.filter.where}"):
            _stage(spark, config, source, request, staging)
    with step(f"[export] publishing shards to {request.out}"):
        shards = _publish(target, staging)
    manifest = _manifest(identity, source, request, shards)
    target.write_bytes(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    target.write_bytes(SUCCESS, b"")
    discard_staging(staging.parent, [identity])
    return ExportResult(request.out, manifest["totals"]["rows"], len(shards), False, manifest)


def _stage(spark, config: Config, source: dict, request: ExportRequest, staging: Path) -> None:
    extras = [c for c in request.columns if c not in ("url", "text")]
    rows = (table_store(config).read(spark, source["path"], source["version"]).filter(request.filter.where)
            .select(F.col("url").alias("URL"), F.col("text").alias("TEXT"), *extras, F.col("hash").alias("_hash")))
    order = ["_hash", "URL", "TEXT"] + [c for c in extras if c != "hash"]
    # The hash's top bits keep the hash order: buckets are ranges of the sort order.
    bucketed = rows.withColumn("_bucket", F.shiftright(F.col("_hash"), 64 - BUCKET_BITS))
    counts = sorted((r["_bucket"], r["count"]) for r in bucketed.groupBy("_bucket").count().collect())
    offsets, total = [], 0
    for bucket, count in counts:
        offsets.append((bucket, total))
        total += count
    if total == 0:
        raise ExportError(f"no row of {source['table']} matches {request.filter.where}")
    in_bucket = Window.partitionBy("_bucket").orderBy(*[F.col(c).asc_nulls_first() for c in order])
    numbered = (bucketed.join(F.broadcast(spark.createDataFrame(offsets, "_bucket bigint, _offset bigint")), "_bucket")
                .withColumn("_index", F.col("_offset") + F.row_number().over(in_bucket) - 1)
                .withColumn(SHARD_COLUMN, F.floor(F.col("_index") / F.lit(request.rows_per_shard)).cast("bigint")))
    shard_count = -(-total // request.rows_per_shard)
    shutil.rmtree(staging, ignore_errors=True)
    (numbered.repartition(shard_count, SHARD_COLUMN)
     .sortWithinPartitions(SHARD_COLUMN, "_index")
     .drop("_bucket", "_offset", "_index", "_hash")
     .write.partitionBy(SHARD_COLUMN).parquet(engine_path(str(staging))))
    (staging / STAGING_DONE).write_text(json.dumps({"rows": total, "shards": shard_count}))


def _publish(target: ExportTarget, staging: Path) -> list[dict]:
    """Move each staged shard to its final name; shards already in place (a resumed run) stay."""
    planned = json.loads((staging / STAGING_DONE).read_text())
    shards = []
    for shard in range(planned["shards"]):
        name = f"{SHARDS_DIR}/part-{shard:05d}.parquet"
        folder = staging / f"{SHARD_COLUMN}={shard}"
        files = sorted(folder.glob("*.parquet")) if folder.exists() else []
        if len(files) > 1:
            raise ExportError(f"{folder}: the engine split shard {shard} into {len(files)} files; "
                              "use a smaller --rows-per-shard")
        if files:
            stats = file_stats(files[0])
            target.put_file(files[0], name)
        else:
            stats = target.stats(name)
            if stats is None:
                raise ExportError(f"shard {shard} is neither staged nor published; rerun the export")
        shards.append({"name": name, **stats})
    return shards


def _manifest(identity: str, source: dict, request: ExportRequest, shards: list[dict]) -> dict:
    out = request.out.rstrip("/")
    extras = [c for c in request.columns if c not in ("url", "text")]
    return {
        "export_id": identity,
        "filter": {"name": request.filter.name, "where": request.filter.where},
        "source": source,
        "columns": ["URL", "TEXT", *extras],
        "rows_per_shard": request.rows_per_shard,
        "shards": shards,
        "totals": {"rows": sum(s["rows"] for s in shards), "shards": len(shards),
                   "bytes": sum(s["bytes"] for s in shards)},
        "img2dataset": (f"img2dataset --url_list {out}/{SHARDS_DIR} --input_format parquet --url_col URL "
                        f"--caption_col TEXT --save_additional_columns '{json.dumps(extras)}' "
                        "--output_format webdataset --disable_all_reencoding True --output_folder <images>"),
    }


def clip_inference_input(folder: str, tar_names: Sequence[str]) -> Optional[str]:
    """clip-retrieval's `--input_dataset` for img2dataset webdataset shards: `<folder>/{00000..00012}.tar`."""
    ids = sorted(int(name.split(".")[0]) for name in tar_names if name.endswith(".tar") and name.split(".")[0].isdigit())
    if not ids:
        return None
    first, last = ids[0], ids[-1]
    if ids != list(range(first, last + 1)):
        return " ".join(f"{folder.rstrip('/')}/{i:05d}.tar" for i in ids)
    return f"{folder.rstrip('/')}/{{{first:05d}..{last:05d}}}.tar" if first != last else f"{folder.rstrip('/')}/{first:05d}.tar"
