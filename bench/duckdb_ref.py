#!/usr/bin/env python
"""The reference: the wide-table rebuild as plain SQL in DuckDB, on the same source files.

    python bench/duckdb_ref.py --config data/bench/1000000/sail.yaml --out data/bench/1000000/duckdb

Reads the sources a build config names (only its `sources`), hashes URL+TEXT with mmh3 through
a DuckDB Python UDF over Arrow batches, and writes ODS, DMD and DMS as hive-partitioned parquet
(`<out>/<layer>/<table>/subset=.../*.parquet`), each layer read back from the files the one
before wrote, as the pipeline does. The SQL mirrors sql/ods, sql/dmd and sql/dms rule for rule:
W/H swapped in base, NaN ids as null, one image per hash, the first configured aesthetic source
holding a score wins, a DMD row for each hash only joined rows hold, one base row per (subset,
hash) by file_name, sample_id, url, text, license, nsfw, and the subset's default language. There are no images in the benchmark's sources, so the image index is
empty (its join still runs). It prints the same progress lines and summary table as
`laion-etl build`, so bench/run.py reads both the same way.
"""

from __future__ import annotations

import argparse
import glob
import logging
import shutil
import sys
import time
from pathlib import Path

import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("duckdb_ref")

IMAGE_INDEX_DDL = ("hash bigint, source_hash bigint, key varchar, url varchar, caption varchar, status varchar, "
                   "image_path varchar, image_suffix varchar, folder varchar, file_name varchar")


def mmh3_hash(urls: pa.ChunkedArray, texts: pa.ChunkedArray) -> pa.Array:
    """LAION's hash with mmh3 over one Arrow batch: the join in C, one mmh3 call per row."""
    empty = pa.scalar(b"", pa.large_binary())
    joined = pc.binary_join_element_wise(pc.cast(urls, pa.large_binary()), pc.cast(texts, pa.large_binary()), empty,
                                         null_handling="replace", null_replacement=b"")
    hash64 = mmh3.hash64
    values = joined.to_numpy(zero_copy_only=False)
    return pa.array(np.fromiter((hash64(v)[0] for v in values), dtype=np.int64, count=len(values)))


def compiled_hash(urls: pa.ChunkedArray, texts: pa.ChunkedArray) -> pa.Array:
    from etl.engine.hashing import laion_hash_arrow

    return laion_hash_arrow(urls, texts)


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def file_list(paths: list[str]) -> str:
    return "[" + ", ".join(sql_string(p) for p in paths) + "]"


def schema_groups(paths: list[str]) -> list[tuple[dict[str, pa.Field], list[str]]]:
    """Files grouped by schema (copies of LAION drift: int32 vs double, null-typed columns);
    each group is read with one read_parquet, with casts chosen for its types, so no value takes
    a detour through a wider type (an int64 hash through double would lose bits)."""
    groups: dict[tuple, tuple[dict[str, pa.Field], list[str]]] = {}
    for path in paths:
        schema = pq.read_schema(path)
        key = tuple((f.name, str(f.type)) for f in schema)
        groups.setdefault(key, ({f.name.lower(): f for f in schema}, []))[1].append(path)
    return list(groups.values())


def column(fields: dict[str, pa.Field], wanted: str, cast: str, *aliases: str) -> str:
    """The source column as `cast`, or a typed null where these files do not have it."""
    for name in (wanted, *aliases):
        if name in fields:
            value = f'"{fields[name].name}"'
            if cast in ("bigint", "integer") and pa.types.is_floating(fields[name].type):
                # Spark truncates a double cast to an integer type; DuckDB rounds. NaN is no number.
                value = f"case when isnan({value}) then null else trunc({value}) end"
            return f"cast({value} as {cast})"
    return f"cast(null as {cast})"


def family_select(family: str, subset: str, paths: list[str], rank: int = 0, source_name: str = "") -> str:
    return "\nunion all by name\n".join(
        group_select(family, subset, fields, group, rank, source_name) for fields, group in schema_groups(paths))


def group_select(family: str, subset: str, fields: dict[str, pa.Field], paths: list[str], rank: int,
                 source_name: str) -> str:
    read = f"read_parquet({file_list(paths)}, filename = true)"
    file_name = "regexp_extract(filename, '[^/]+$')"
    c = lambda wanted, cast, *aliases: column(fields, wanted, cast, *aliases)  # noqa: E731
    if family == "base":
        return f"""
            select {c('sample_id', 'bigint')} as sample_id, {c('url', 'varchar')} as url,
                   {c('text', 'varchar')} as text,
                   -- LAION's base files swap WIDTH and HEIGHT; joined and aesthetic files do not.
                   {c('height', 'integer')} as width, {c('width', 'integer')} as height,
                   {c('license', 'varchar')} as license, {c('nsfw', 'varchar')} as nsfw,
                   {c('similarity', 'double')} as similarity, {c('language', 'varchar')} as language,
                   {file_name} as file_name, {sql_string(subset)} as subset
            from {read}"""
    common = f"""{c('url', 'varchar')} as url, {c('text', 'varchar')} as text,
                 {c('width', 'integer')} as width, {c('height', 'integer')} as height,
                 {c('similarity', 'double')} as similarity, {c('punsafe', 'float')} as punsafe,
                 {c('pwatermark', 'float')} as pwatermark, {c('hash', 'bigint')} as source_hash"""
    if family == "joined":
        return f"""
            select {common}, {c('language', 'varchar')} as language,
                   {file_name} as file_name, {sql_string(subset)} as subset
            from {read}"""
    return f"""
        select {common}, {c('aesthetic_score', 'float', 'aesthetic')} as aesthetic_score,
               cast({rank} as integer) as source_rank, {sql_string(source_name)} as source_name,
               {file_name} as file_name, {sql_string(subset)} as subset
        from {read}"""


def source_name(pattern: str) -> str:
    parts = [p for p in pattern.rstrip("/").split("/") if p and not any(ch in p for ch in "*?[")]
    return parts[-1] if parts else pattern


def source_rows(config, family: str) -> int:
    """Rows in a family's source files, from their footers (as the build plan counts them)."""
    patterns = [p for s in config.sources for p in s.globs(family)]
    return sum(pq.ParquetFile(path).metadata.num_rows for pattern in patterns for path in glob.glob(pattern))


def source_union(config, family: str) -> str:
    selects = []
    for subset in config.sources:
        if family == "aesthetic":
            for rank, pattern in enumerate(subset.globs(family)):
                paths = sorted(glob.glob(pattern))
                if paths:
                    selects.append(family_select(family, subset.name, paths, rank, source_name(pattern)))
        else:
            paths = sorted(p for pattern in subset.globs(family) for p in glob.glob(pattern))
            if not paths:
                raise SystemExit(f"duckdb_ref: sources.{subset.name}.{family}: no file matches")
            selects.append(family_select(family, subset.name, paths))
    return "\nunion all by name\n".join(selects)


ODS = {
    "ods_laion_base": ("base", """
        select sample_id, url, text, width, height, license, nsfw, similarity, language,
               laion_hash(url, text) as hash, file_name, subset
        from src"""),
    "ods_laion_joined": ("joined", """
        select url, text, width, height, similarity, punsafe, pwatermark, language, source_hash,
               laion_hash(url, text) as hash, file_name, subset
        from src"""),
    "ods_laion_aesthetic": ("aesthetic", """
        select url, text, width, height, similarity, punsafe, pwatermark, aesthetic_score, source_hash,
               laion_hash(url, text) as hash, source_rank, source_name, file_name, subset
        from src"""),
}

DMD = """
with base as (
    select * from ods_laion_base
),
joined_only_hashes as (
    select distinct joined.subset, joined.hash
    from ods_laion_joined as joined
    anti join base on joined.subset = base.subset and joined.hash = base.hash
),
keyed_rows as (
    select sample_id, url, text, width, height, similarity, hash, license, nsfw, language, file_name, subset
    from base
    union all
    select null::bigint, null::varchar, null::varchar, null::integer, null::integer, null::double, hash,
           null::varchar, null::varchar, null::varchar, null::varchar, subset
    from joined_only_hashes
),
downloaded_images as (
    select * from ods_image_index where image_path is not null
),
image_per_hash as (
    select hash, image_path, image_suffix
    from (
        select hash, image_path, image_suffix,
               row_number() over (
                   partition by hash
                   order by folder asc nulls last, file_name asc nulls last, key asc nulls last, image_path asc nulls last
               ) as image_rank
        from downloaded_images
    )
    where image_rank = 1
),
aesthetic_per_hash as (
    select subset, hash, aesthetic_score
    from (
        select subset, hash, aesthetic_score,
               row_number() over (
                   partition by subset, hash
                   order by source_rank asc nulls first, file_name asc nulls last, aesthetic_score desc nulls last
               ) as aesthetic_rank
        from ods_laion_aesthetic
        where aesthetic_score is not null
    )
    where aesthetic_rank = 1
)
select keyed_rows.sample_id, keyed_rows.url, keyed_rows.text, keyed_rows.width, keyed_rows.height,
       keyed_rows.similarity, keyed_rows.hash, keyed_rows.license, keyed_rows.nsfw, keyed_rows.language,
       aesthetic_per_hash.aesthetic_score, image_per_hash.image_path, image_per_hash.image_suffix,
       keyed_rows.file_name, keyed_rows.subset
from keyed_rows
left join image_per_hash on keyed_rows.hash = image_per_hash.hash
left join aesthetic_per_hash on keyed_rows.subset = aesthetic_per_hash.subset and keyed_rows.hash = aesthetic_per_hash.hash
"""

DMS = """
with joined as (
    select * from ods_laion_joined
),
base_per_hash as (
    select * exclude (base_rank)
    from (
        select *,
               row_number() over (
                   partition by subset, hash
                   order by file_name asc nulls last, sample_id asc nulls last, url asc nulls last,
                            text asc nulls last, license asc nulls last, nsfw asc nulls last
               ) as base_rank
        from dmd_image_path_suffix_aesthetics
    )
    where base_rank = 1
)
select base_per_hash.sample_id, joined.url, joined.text, joined.width, joined.height, joined.similarity,
       joined.hash, joined.punsafe, joined.pwatermark, base_per_hash.image_suffix, base_per_hash.license,
       base_per_hash.nsfw, base_per_hash.aesthetic_score,
       coalesce(joined.language, subset_defaults.default_language) as language,
       joined.file_name, base_per_hash.image_path, joined.subset
from joined
left join base_per_hash on joined.subset = base_per_hash.subset and joined.hash = base_per_hash.hash
left join subset_defaults on joined.subset = subset_defaults.subset
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a laion-etl build config (only `sources` is used)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the parquet tables (replaced)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="", help="DuckDB memory_limit, e.g. 8GB (default: DuckDB's)")
    parser.add_argument("--hash", choices=("mmh3", "compiled"), default="mmh3",
                        help="mmh3 (the obvious reference) or the project's compiled kernel")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)

    import duckdb

    from etl.project.config import load_config
    from etl.build.summary import format_rows

    config = load_config(args.config)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    con = duckdb.connect()
    con.execute(f"set threads = {int(args.threads)}")
    if args.memory_limit:
        con.execute(f"set memory_limit = {sql_string(args.memory_limit)}")
    con.execute(f"set temp_directory = {sql_string(str(args.out / '_tmp'))}")
    con.execute("set preserve_insertion_order = false")
    con.create_function("laion_hash", mmh3_hash if args.hash == "mmh3" else compiled_hash,
                        ["VARCHAR", "VARCHAR"], "BIGINT", type="arrow", null_handling="special", side_effects=False)
    rows = [(s.name, s.language) for s in config.sources]
    con.execute("create table subset_defaults (subset varchar, default_language varchar)")
    con.executemany("insert into subset_defaults values (?, ?)", rows)

    results = []

    def materialise(layer: str, table: str, query: str, rows_in, partitioned: bool = True) -> None:
        target = args.out / layer / table
        describe = f"[{layer}] {table} <- duckdb"
        log.info("%s ...", describe)
        started = time.monotonic()
        options = "format parquet, partition_by (subset), overwrite_or_ignore" if partitioned else "format parquet"
        path = target if partitioned else target / "data.parquet"
        target.mkdir(parents=True, exist_ok=True)
        written = con.execute(f"copy ({query}) to {sql_string(str(path))} ({options})").fetchone()[0]
        seconds = time.monotonic() - started
        log.info("%s done in %.1f s", describe, seconds)
        results.append((layer, f"laion.{table}", rows_in, written, seconds))
        con.execute(f"create or replace view {table} as select * from read_parquet("
                    f"{sql_string(str(target / '**' / '*.parquet'))}, hive_partitioning = {str(partitioned).lower()})")

    # The image index: no img2dataset output in the benchmark, an empty table as on our side.
    con.execute(f"create table empty_index ({IMAGE_INDEX_DDL})")
    materialise("ods", "ods_image_index", "select * from empty_index", None, partitioned=False)
    for table, (family, select) in ODS.items():
        materialise("ods", table, f"with src as ({source_union(config, family)}) {select}", source_rows(config, family))
    written = {table: rows_out for _, table, _, rows_out, _ in results}
    materialise("dmd", "dmd_image_path_suffix_aesthetics", DMD, written["laion.ods_laion_base"])
    materialise("dms", "dms_laion_wide", DMS, written["laion.ods_laion_joined"])
    con.close()
    shutil.rmtree(args.out / "_tmp", ignore_errors=True)

    print(format_rows(("layer", "table", "rows in", "rows out", "seconds"),
                      [(*row[:-1], f"{row[-1]:.3f}") for row in results]))
    print(f"{len(results)} tables built in {sum(r[-1] for r in results):.1f} s under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
