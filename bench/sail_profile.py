#!/usr/bin/env python
"""Where a Sail build's time goes, per table: quarantine, the SELECT + write, the quality checks;
and, with --alternatives, other DMS SQL (early projection, dedup by min_by) timed against the project's.

    python bench/sail_profile.py --config data/bench/1000000-seed0/sail.yaml --warehouse data/bench/profile

A measuring tool, not part of the product: it drives the build's own steps (etl.build.materialise's
internals) one at a time with a timer around each, on a warehouse of its own. The alternatives
are written beside the tables and compared with them by a fingerprint over every column (count
and two order-free row-hash sums), so a faster variant only counts if it gives the same rows. The last stdout line is `RESULT <json>`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Alternatives to the project's DMS SQL, measured against it (opt-in: --alternatives).
# Measured on Sail 0.7.2 at 1M rows: the window projected early is a little faster; min_by over a
# struct order key is 3-5x slower; min(struct(...)) as the dedup grew past 24 GB and was killed by
# the OOM killer at 1M rows, so it is not offered here.
LANGUAGE = "coalesce(joined.language, case joined.subset {languages} end) as language"
DMS_SELECT = """
select base_per_hash.sample_id, joined.url, joined.text, joined.width, joined.height, joined.similarity,
       joined.hash, joined.punsafe, joined.pwatermark, base_per_hash.image_suffix, base_per_hash.license,
       base_per_hash.nsfw, base_per_hash.aesthetic_score, """ + LANGUAGE + """,
       joined.file_name, base_per_hash.image_path, joined.subset
from laion.ods_laion_joined as joined
left join base_per_hash on joined.subset = base_per_hash.subset and joined.hash = base_per_hash.hash
"""
ALTERNATIVES = {
    # The same window, over only the columns DMS keeps (plus the order keys), the subset default
    # language as a CASE instead of a join with cfg_subsets.
    "window, projected early": """
with base_per_hash as (
    select * from (
        select subset, hash, sample_id, license, nsfw, image_suffix, aesthetic_score, image_path,
               row_number() over (
                   partition by subset, hash
                   order by file_name nulls last, sample_id nulls last, url nulls last, text nulls last,
                            license nulls last, nsfw nulls last) as base_rank
        from laion.dmd_image_path_suffix_aesthetics)
    where base_rank = 1
)""" + DMS_SELECT,
    # The dedup as an aggregate: the first row by the window's order is min_by over a struct key
    # (a null flag before each nullable key keeps "nulls last").
    "min_by(struct key)": """
with base_per_hash as (
    select subset, hash, best.* from (
        select subset, hash,
               min_by(struct(sample_id, license, nsfw, image_suffix, aesthetic_score, image_path),
                      struct(file_name is null, file_name, sample_id is null, sample_id, url is null, url,
                             text is null, text, license is null, license, nsfw is null, nsfw)) as best
        from laion.dmd_image_path_suffix_aesthetics
        group by subset, hash)
)""" + DMS_SELECT,
}


def timed(label: str, timings: dict, run):
    started = time.perf_counter()
    value = run()
    timings[label] = time.perf_counter() - started
    print(f"  {label:55s} {timings[label]:7.2f} s", flush=True)
    return value


def fingerprint(spark, path: str) -> tuple:
    """Row count and order-free sums of two row hashes over every column: equal multisets of rows
    give equal fingerprints (exceptAll would be exact but takes minutes at 10M rows on Sail)."""
    df = spark.read.format("delta").load(path)
    columns = ", ".join(f"`{c}`" for c in sorted(df.columns))
    return tuple(df.selectExpr("count(*)", f"sum(cast(xxhash64({columns}) as decimal(38,0)))",
                               f"sum(cast(hash({columns}) as bigint))").first())


def alternative_ods_hash(spark, plan, config, warehouse: Path, run_id: str, timings: dict, checks: dict) -> None:
    """ods_laion_base with the hash computed by mapInArrow on the source batches instead of the
    SQL pandas UDF (the SQL then selects the column)."""
    from pyspark.sql.types import LongType, StructField, StructType

    from etl.build import materialise as build
    from etl.engine.hashing import laion_hash_batches
    from etl.warehouse.store import write_table

    table = next(t for t in plan.tables if t.name == "ods_laion_base")
    build._bind_input_views(spark, plan, table)
    source = spark.table("src_laion_base")
    schema = StructType(source.schema.fields + [StructField("_hash", LongType())])
    source.mapInArrow(laion_hash_batches("url", "text", "_hash"), schema).createOrReplaceTempView("src_laion_base")
    sql = table.sql.replace("laion_hash(url, text)", "_hash")
    path = str(warehouse / "alternatives" / "ods_laion_base_map_in_arrow")
    name = "ods_laion_base: select + write, hash by mapInArrow at read"
    timed(name, timings, lambda: write_table(spark, spark.sql(sql), path, "delta", ["subset"], None, run_id))
    checks[name] = fingerprint(spark, path) == fingerprint(spark, table.path(config))
    print(f"  same rows as the project's: {checks[name]}", flush=True)


def alternative_shuffle_partitions(spark, plan, config, warehouse: Path, run_id: str, timings: dict,
                                   checks: dict) -> None:
    """The project's DMS SQL with other spark.sql.shuffle.partitions values: time and files."""
    from etl.build import materialise as build
    from etl.warehouse.store import write_table

    table = next(t for t in plan.tables if t.name == "dms_laion_wide")
    build._bind_input_views(spark, plan, table)
    expected = fingerprint(spark, table.path(config))
    key = "spark.sql.shuffle.partitions"
    before = spark.conf.get(key)
    try:
        for partitions in (2, 8, 32):
            spark.conf.set(key, str(partitions))
            path = warehouse / "alternatives" / f"dms_shuffle_{partitions}"
            name = f"dms_laion_wide: select + write, shuffle partitions {partitions}"
            timed(name, timings, lambda: write_table(spark, spark.sql(table.sql), str(path), "delta", ["subset"],
                                                     None, run_id))
            files = len(list(path.rglob("*.parquet")))
            checks[name] = fingerprint(spark, str(path)) == expected
            print(f"  {files} data files; same rows as the project's: {checks[name]}", flush=True)
    finally:
        spark.conf.set(key, before)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="a sail/delta build config (its sources are used)")
    parser.add_argument("--warehouse", required=True, type=Path, help="a scratch warehouse (replaced)")
    parser.add_argument("--shuffle-partitions", type=int)
    parser.add_argument("--alternatives", action="store_true",
                        help="also time the alternatives: hash by mapInArrow, shuffle partitions, early projection")
    parser.add_argument("--min-by", action="store_true",
                        help="with --alternatives, also the min_by dedup (3-5x slower on Sail 0.7.2; watch memory)")
    args = parser.parse_args(argv)

    from etl.build import materialise as build
    from etl.project.config import load_config
    from etl.project.project import load_project
    from etl.warehouse.meta import previous_observed_values, register_meta_tables
    from etl.build.plan import make_plan
    from etl.build.runs import new_run_id
    from etl.engine.session import open_session
    from etl.quality.validation import Validator, expected_totals
    from etl.warehouse.store import write_table

    if args.warehouse.exists():
        shutil.rmtree(args.warehouse)
    overrides = {"warehouse": str(args.warehouse.resolve()), "engine": "sail", "format": "delta"}
    config = load_config(str(args.config), overrides=overrides)
    if args.shuffle_partitions:
        from dataclasses import replace

        config = replace(config, spark=replace(config.spark, shuffle_partitions=args.shuffle_partitions))
    plan = make_plan(load_project(config.project_dir), config)
    timings: dict[str, float] = {}
    checks: dict[str, bool] = {}
    run_id = new_run_id()
    with open_session(config) as spark:
        register_meta_tables(spark, plan.project, config)
        state = build.BuildState(run_id=run_id, validator=Validator(config.dq_rules,
                                                                    previous_observed_values(spark, config, run_id),
                                                                    expected_totals(config)))
        for table in plan.tables:
            rejected = build._bind_input_views(spark, plan, table)
            if rejected is not None:
                timed(f"{table.name}: quarantine (second read of the sources)", timings,
                      lambda: build._write_quarantine(spark, plan, table, rejected, run_id))
            written = timed(f"{table.name}: select + write", timings, lambda: build._materialise(spark, plan, table, run_id))
            timed(f"{table.name}: quality checks", timings, lambda: build._validate(spark, plan, table, state, written.version))

        if args.alternatives:
            alternative_ods_hash(spark, plan, config, args.warehouse, run_id, timings, checks)
            alternative_shuffle_partitions(spark, plan, config, args.warehouse, run_id, timings, checks)
            languages = " ".join(f"when '{s.name}' then '{s.language}'" for s in config.sources if s.language)
            project = next(t for t in plan.tables if t.name == "dms_laion_wide").path(config)
            expected = fingerprint(spark, project)
            for name, sql in ALTERNATIVES.items():
                if name.startswith("min_by") and not args.min_by:
                    continue
                path = str(args.warehouse / "alternatives" / name.replace(" ", "_").replace(",", "")
                           .replace("(", "").replace(")", ""))
                timed(f"dms_laion_wide: select + write, {name}", timings,
                      lambda: write_table(spark, spark.sql(sql.format(languages=languages)), path, "delta",
                                          ["subset"], None, run_id))
                checks[f"dms_laion_wide, {name}: same rows"] = fingerprint(spark, path) == expected
                print(f"  dms_laion_wide, {name}: same rows as the project's SQL: "
                      f"{checks[f'dms_laion_wide, {name}: same rows']}", flush=True)
    print("RESULT " + json.dumps({"timings": timings, "checks": checks}))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
