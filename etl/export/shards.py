"""Export filtered wide-table rows as parquet parts a consumer reads as they are.

What the rows, columns and part names are is the layout's (etl.export.layouts: img2dataset's
`shards/part-00000.parquet`, OpenDataLab's per-subset parts and their partitioned wide table);
everything else is here, once for every layout: `<out>/manifest.json`, `<out>/_SUCCESS` last.

Determinism without collecting rows: the layout orders its rows by a total order starting with the
hash; the driver collects only row counts per group (the layout's folder) and hash bucket (the top
bits of the hash), turns them into offsets, and the engine numbers rows within buckets, so every
row's index within its group — hence its part, `index // rows_per_shard` — is the same in every run
over the same table version. The engine writes one file per part into a staging folder; they are
then renamed (or uploaded with boto3 for `s3://`) to their final names, the manifest is written,
`_SUCCESS` last.

Re-running the same export (same table version, layout, filter, columns and part size) is a no-op;
an interrupted one resumes: a complete staging folder is not rewritten, finished parts are kept.
Everything that can refuse an export (the request, the destination: etl.export.destination) is
decided before any engine starts, and the table version is fixed then.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from pyspark.sql import Window
from pyspark.sql import functions as F

from etl.project.config import Config
from etl.export.destination import MANIFEST, STAGING_DONE, SUCCESS, check_out, claim, discard_staging, staging_root
from etl.engine.paths import engine_path
from etl.export.filters import ResolvedFilter
from etl.export.layouts import DEFAULT_LAYOUT, GROUP, HASH, LAYOUTS, Layout
from etl.export.object_store import ExportTarget, file_stats, target_for
from etl.progress import step
from etl.project.project import Project
from etl.project.tables import DATABASE
from etl.s3_settings import S3Settings
from etl.warehouse.store import table_store

log = logging.getLogger(__name__)

SHARD_COLUMN = "_shard"


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class ExportRequest:
    filter: ResolvedFilter
    out: str
    rows_per_shard: int
    columns: Optional[tuple[str, ...]] = None  # extra columns (img2dataset layout); None: its default
    layout: str = DEFAULT_LAYOUT
    overwrite: bool = False  # replace what earlier exports wrote in `out`


@dataclass(frozen=True)
class ExportPlan:
    """An export fixed before any engine starts: what was asked, the table version it reads, its id."""
    request: ExportRequest
    layout: Layout
    wide_columns: tuple[str, ...]  # the wide table's, in contract order
    extras: tuple[str, ...]  # the chosen extra columns, for the layouts that take them
    source: dict
    identity: str


@dataclass(frozen=True)
class ExportResult:
    out: str
    rows: int
    shards: int
    skipped: bool  # the same export was already complete
    manifest: dict
    usage: str  # how the layout's consumer reads it


def plan_export(project: Project, config: Config, request: ExportRequest,
                pipeline_folders: Mapping[str, str]) -> ExportPlan:
    """Check the request, fix the table version and claim the destination: every refusal happens
    here, before any engine starts. The export stays out of `pipeline_folders` (folder -> what it is)."""
    layout = validate_request(project, config, request, pipeline_folders)
    path = project.wide_table.path(config)
    source = {"table": f"{DATABASE}.{project.wide_table.name}", "path": path, "format": config.format,
              "version": table_store(config).version(path)}
    chosen = request.columns if request.columns is not None else layout.default_columns
    extras = tuple(c for c in chosen if c not in ("url", "text"))
    identity = export_id(source, request, layout, chosen)
    plan = ExportPlan(request, layout, tuple(project.wide_table.contract.column_types), extras, source, identity)
    claim(target_for(request.out, S3Settings.from_config(config)), request.out, plan.identity, request.overwrite)
    return plan


def validate_request(project: Project, config: Config, request: ExportRequest,
                     pipeline_folders: Mapping[str, str]) -> Layout:
    """Refuse a bad request before any engine starts; the layout it asks for."""
    layout = LAYOUTS.get(request.layout)
    if layout is None:
        raise ExportError(f"--layout: unknown layout {request.layout!r} (known: {', '.join(LAYOUTS)})")
    if request.columns is not None and not layout.takes_columns:
        raise ExportError(f"--columns: the {layout.name} layout has fixed columns "
                          f"({', '.join(layout.columns(project.wide_table.contract.column_types, ()))}); "
                          f"--columns chooses those of the {DEFAULT_LAYOUT} layout")
    wide = project.wide_table.contract.column_types
    unknown = [c for c in request.columns or () if c not in wide]
    if unknown:
        raise ExportError(f"--columns: unknown column {unknown[0]!r} (known: {', '.join(sorted(wide))})")
    if request.rows_per_shard < 1:
        raise ExportError("--rows-per-shard must be at least 1")
    check_out(request.out, pipeline_folders)
    path = project.wide_table.path(config)
    if not table_store(config).exists(path):
        raise ExportError(f"{DATABASE}.{project.wide_table.name} is not built yet at {path}: run build first")
    return layout


def export_id(source: dict, request: ExportRequest, layout: Layout, columns: Sequence[str]) -> str:
    """Names one export: same table version, layout, filter, columns and part size, same id. The
    default layout leaves itself out of the key, so exports made before layouts existed keep their id
    (a rerun into their folder is still a no-op, not "another export")."""
    identity = {"source": source, "where": request.filter.where, "columns": list(columns),
                "rows_per_shard": request.rows_per_shard}
    if layout.name != DEFAULT_LAYOUT:
        identity["layout"] = layout.name
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def export_shards(spark, config: Config, plan: ExportPlan) -> ExportResult:
    request, source, identity, layout = plan.request, plan.source, plan.identity, plan.layout
    target = target_for(request.out, S3Settings.from_config(config))
    existing = target.read_json(MANIFEST)  # the destination is claimed: a manifest there is this export's
    if existing and target.exists(SUCCESS):
        log.info("%s already holds this export (%s); nothing to do", request.out, identity)
        return ExportResult(request.out, existing["totals"]["rows"], existing["totals"]["shards"], True, existing,
                            existing[layout.usage_key])
    staging = staging_root(request.out) / identity
    if not (staging / STAGING_DONE).exists():
        with step(f"[export] writing {layout.name} parts of {source['table']} where {request.filter.where}"):
            _stage(spark, config, plan, staging)
    with step(f"[export] publishing parts to {request.out}"):
        shards = _publish(target, staging)
    manifest = _manifest(plan, shards)
    target.write_bytes(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    target.write_bytes(SUCCESS, b"")
    discard_staging(staging.parent, [identity])
    return ExportResult(request.out, manifest["totals"]["rows"], len(shards), False, manifest,
                        manifest[layout.usage_key])


def _stage(spark, config: Config, plan: ExportPlan, staging: Path) -> None:
    request, source, layout = plan.request, plan.source, plan.layout
    wide = table_store(config).read(spark, source["path"], source["version"]).filter(request.filter.where)
    rows = layout.rows(wide, plan.wide_columns, plan.extras)
    # The hash's top bits keep the hash order: within a group, buckets are ranges of the sort order.
    bucketed = rows.withColumn("_bucket", F.shiftright(F.col(HASH), 64 - layout.bucket_bits))
    counts = sorted((r[GROUP], r["_bucket"], r["count"]) for r in bucketed.groupBy(GROUP, "_bucket").count().collect())
    # A group's parts are numbered from 0 in its folder; staged, all parts run on, a group's from `_first`.
    offsets, parts = [], []
    for group, buckets in itertools.groupby(counts, key=lambda count: count[0]):
        first_shard, in_group = len(parts), 0
        for _, bucket, count in buckets:
            offsets.append((group, bucket, in_group, first_shard))
            in_group += count
        part_count = -(-in_group // request.rows_per_shard)
        parts += [layout.part_name(group, part, plan.identity) for part in range(part_count)]
    total = sum(count for _, _, count in counts)
    if total == 0:
        raise ExportError(f"no row of {source['table']} matches {request.filter.where}")
    in_bucket = Window.partitionBy(GROUP, "_bucket").orderBy(
        *[F.col(c).asc_nulls_first() for c in layout.order(plan.wide_columns, plan.extras)])
    offsets_frame = spark.createDataFrame(offsets, f"{GROUP} string, _bucket bigint, _offset bigint, _first bigint")
    numbered = (bucketed.join(F.broadcast(offsets_frame), [GROUP, "_bucket"])
                .withColumn("_index", F.col("_offset") + F.row_number().over(in_bucket) - 1)
                .withColumn(SHARD_COLUMN, (F.col("_first") + F.floor(F.col("_index") / F.lit(request.rows_per_shard)))
                            .cast("bigint")))
    shutil.rmtree(staging, ignore_errors=True)
    (numbered.repartition(len(parts), SHARD_COLUMN)
     .sortWithinPartitions(SHARD_COLUMN, "_index")
     .drop("_bucket", "_offset", "_first", "_index", HASH, GROUP)
     .write.partitionBy(SHARD_COLUMN).parquet(engine_path(str(staging))))
    (staging / STAGING_DONE).write_text(json.dumps({"rows": total, "parts": parts}))


def _publish(target: ExportTarget, staging: Path) -> list[dict]:
    """Move each staged part to its final name; parts already in place (a resumed run) stay."""
    planned = json.loads((staging / STAGING_DONE).read_text())
    shards = []
    for shard, name in enumerate(planned["parts"]):
        folder = staging / f"{SHARD_COLUMN}={shard}"
        files = sorted(folder.glob("*.parquet")) if folder.exists() else []
        if len(files) > 1:
            raise ExportError(f"{folder}: the engine split part {name} into {len(files)} files; "
                              "use a smaller --rows-per-shard")
        if files:
            stats = file_stats(files[0])
            target.put_file(files[0], name)
        else:
            stats = target.stats(name)
            if stats is None:
                raise ExportError(f"part {name} is neither staged nor published; rerun the export")
        shards.append({"name": name, **stats})
    return shards


def _manifest(plan: ExportPlan, shards: list[dict]) -> dict:
    request, layout = plan.request, plan.layout
    return {
        "export_id": plan.identity,
        "layout": layout.name,
        "filter": {"name": request.filter.name, "where": request.filter.where},
        "source": plan.source,
        "columns": layout.columns(plan.wide_columns, plan.extras),
        "rows_per_shard": request.rows_per_shard,
        "shards": shards,
        "totals": {"rows": sum(s["rows"] for s in shards), "shards": len(shards),
                   "bytes": sum(s["bytes"] for s in shards)},
        layout.usage_key: layout.usage(request.out.rstrip("/"), plan.extras),
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
