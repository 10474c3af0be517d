"""Export layouts: the rows, columns and part names each consumer of the wide table reads.

One machinery (etl.export.shards) numbers, stages, publishes and describes every export; a layout
only says what differs between consumers:
  * its rows: the filtered wide-table rows projected to its columns, plus `_hash` (the hash, whose
    top bits make the numbering buckets) and `_group` (the folder its parts go in);
  * the total order its rows are numbered in within a group (ties cannot pick different files);
  * how many hash buckets per group the driver may collect counts for;
  * the name of part N of a group, and how a consumer reads the result.

`img2dataset` (the default): `shards/part-00000.parquet` with URL, TEXT and chosen columns.
`opendatalab`: what OpenDataLab's laion5b-downloader (`add_task.py`) reads: one folder per subset
of `part-NNNNN-<export id>.parquet` (it takes the part number from the name's second `-` field and
saves each image as `<subset>/<part number>/<id>.<image_suffix>`, evaluating `id` as an integer),
one row per (subset, hash) since rows sharing a hash share URL and TEXT: one download serves them.
`opendatalab-wide`: OpenDataLab's published wide table, every column, partitioned Hive-style by
the source part `file_name` (the partition column lives in the folder name, as Spark writes it).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

HASH, GROUP = "_hash", "_group"
DEFAULT_LAYOUT = "img2dataset"
SHARDS_DIR = "shards"  # img2dataset's --url_list


class Layout(ABC):
    name: str
    bucket_bits: int  # groups x 2**bucket_bits counts reach the driver: keep it small for many groups
    usage_key: str  # the manifest field saying how the consumer reads the export
    takes_columns = False  # whether --columns chooses extra columns
    default_columns: tuple[str, ...] = ()  # the extra columns when --columns is not given

    @abstractmethod
    def columns(self, wide_columns: Sequence[str], extras: Sequence[str]) -> list[str]:
        """The columns a consumer reads, in order."""

    @abstractmethod
    def rows(self, wide: DataFrame, wide_columns: Sequence[str], extras: Sequence[str]) -> DataFrame:
        """The rows to write: the layout's columns (as stored in its files), `_hash` and `_group`."""

    @abstractmethod
    def order(self, wide_columns: Sequence[str], extras: Sequence[str]) -> list[str]:
        """A total order over the written columns, `_hash` first (its top bits are the buckets)."""

    @abstractmethod
    def part_name(self, group: str, part: int, export_id: str) -> str:
        """Where part `part` (0, 1, ... within its group) is published, relative to `--out`."""

    @abstractmethod
    def usage(self, out: str, extras: Sequence[str]) -> str:
        """How the consumer reads the export at `out`."""


class Img2datasetLayout(Layout):
    name, bucket_bits, usage_key, takes_columns = "img2dataset", 12, "img2dataset", True
    default_columns = ("similarity", "hash", "punsafe", "pwatermark", "aesthetic_score", "language")
    folder = SHARDS_DIR

    def columns(self, wide_columns, extras):
        return ["URL", "TEXT", *extras]

    def rows(self, wide, wide_columns, extras):
        return wide.select(F.col("url").alias("URL"), F.col("text").alias("TEXT"), *extras,
                           F.col("hash").alias(HASH), F.lit("").alias(GROUP))

    def order(self, wide_columns, extras):
        return [HASH, "URL", "TEXT", *[c for c in extras if c != "hash"]]

    def part_name(self, group, part, export_id):
        return f"{self.folder}/part-{part:05d}.parquet"

    def usage(self, out, extras):
        return (f"img2dataset --url_list {out}/{self.folder} --input_format parquet --url_col URL "
                f"--caption_col TEXT --save_additional_columns '{json.dumps(list(extras))}' "
                "--output_format webdataset --disable_all_reencoding True --output_folder <images>")


class OpenDataLabLayout(Layout):
    name, bucket_bits, usage_key = "opendatalab", 12, "laion5b_downloader"
    # Their task builder's columns; the image suffix they save under when the index knows none.
    COLUMNS = ("id", "SAMPLE_ID", "URL", "TEXT", "HEIGHT", "WIDTH", "LICENSE", "NSFW", "similarity", "image_suffix")
    DEFAULT_SUFFIX = "jpg"

    def columns(self, wide_columns, extras):
        return list(self.COLUMNS)

    def rows(self, wide, wide_columns, extras):
        suffix = F.col("image_suffix")
        projected = wide.select(
            F.col("hash").cast("string").alias("id"), F.col("sample_id").alias("SAMPLE_ID"),
            F.col("url").alias("URL"), F.col("text").alias("TEXT"), F.col("height").alias("HEIGHT"),
            F.col("width").alias("WIDTH"), F.col("license").alias("LICENSE"), F.col("nsfw").alias("NSFW"),
            "similarity",
            F.when(suffix.isNull() | (suffix == "unknown"), F.lit(self.DEFAULT_SUFFIX)).otherwise(suffix)
            .alias("image_suffix"),
            F.col("hash").alias(HASH), F.col("subset").alias(GROUP), F.col("file_name").alias("_file_name"))
        # One row per (subset, hash): the first source part's, then the least by every written column.
        first = Window.partitionBy(GROUP, HASH).orderBy(
            *[F.col(c).asc_nulls_first() for c in ("_file_name", *self.COLUMNS)])
        return (projected.withColumn("_pick", F.row_number().over(first)).filter(F.col("_pick") == 1)
                .drop("_pick", "_file_name"))

    def order(self, wide_columns, extras):
        return [HASH, *self.COLUMNS]

    def part_name(self, group, part, export_id):
        return f"{group}/part-{part:05d}-{export_id}.parquet"

    def usage(self, out, extras):
        return (f"laion5b-downloader: add_task.py with base_path = \"{out}\" (it reads the subset folders whose "
                "name contains 'laion')")


class OpenDataLabWideLayout(Layout):
    # One group per source part (hundreds in LAION-5B): 64 buckets each keeps the driver's counts small.
    name, bucket_bits, usage_key = "opendatalab-wide", 6, "read_with"
    folder, partition_column = "wide", "file_name"

    def columns(self, wide_columns, extras):
        return list(wide_columns)

    def rows(self, wide, wide_columns, extras):
        return wide.select(*[c for c in wide_columns if c != self.partition_column],
                           F.col("hash").alias(HASH), F.col(self.partition_column).alias(GROUP))

    def order(self, wide_columns, extras):
        return [HASH, *[c for c in wide_columns if c != self.partition_column]]

    def part_name(self, group, part, export_id):
        return f"{self.folder}/{self.partition_column}={hive_escape(group)}/part-{part:05d}-{export_id}.parquet"

    def usage(self, out, extras):
        return (f"spark.read.parquet(\"{out}/{self.folder}\") or pyarrow.dataset.dataset(\"{out}/{self.folder}\", "
                f"partitioning=\"hive\") ({self.partition_column} from the folder names)")


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in
                              (Img2datasetLayout(), OpenDataLabLayout(), OpenDataLabWideLayout())}

# The characters Spark escapes in a partition folder name (`%XX`), as Hive does; readers unescape them.
_HIVE_ESCAPED = set('"#%\'*/:=?\\\x7f{[]^') | {chr(c) for c in range(1, 32)}


def hive_escape(value: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in _HIVE_ESCAPED else c for c in value)
