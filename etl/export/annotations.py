"""mindone's Stable Diffusion training annotations, written from the wide table.

mindone's recipe (step 4, `laion_gen_csv_annot.py`) walks every downloaded image folder and reads
each image's `.json` to find its caption; at LAION scale that is hundreds of millions of small
reads, and it lists whatever happens to lie in the folders. The wide table already knows every
downloaded image (`image_path`, from the image index) and its caption (`text`), at a fixed table
version, so the same CSVs come from one query instead.

The CSVs are the ones mindone's loader reads (`pd.read_csv`, then `os.path.join(data_path, dir)`):
header `dir,text`, UTF-8 without BOM, `\\n` line ends, fields quoted only when they must be, as
pandas' `to_csv(index=False)` writes them. An image folder of the config (one img2dataset output,
mindone's "part", e.g. `<data>/part_1`) gives

- `--per part` (mindone's default): `<out>/part_1.csv`, dir relative to the data folder
  (`part_1/00000/000000000.jpg`): copied into `<data>`, mindone's `data_path` is `<data>`;
- `--per folder`: `<out>/part_1/00000.csv` per image folder, dir relative to the part folder
  (`00000/000000000.jpg`), as mindone's own `--save_csv_per_img_folder` writes them: copied
  into `<data>`, `data_path` is `<data>/part_1`.

Images in `webdataset` tars or `parquet` shards have no file of their own: their `dir` is the
table's member URI (`<folder>/00000.tar#000000000.jpg`, `<folder>/00000.parquet#000000000`).

One line per image: rows sharing an image share its hash, hence its URL and caption (the hash is
LAION's mmh3 of URL + TEXT), and mindone trains on each line, so a repeated image would be a
repeated sample. Under the rare hash collision two captions meet one image; the first in sort
order is kept and the manifest counts such images. A null caption is written empty, as mindone's
script writes an image whose `.json` caption is null. Lines are ordered by image path (img2dataset's
zero-padded names make that shard, then key order), so reruns over one table version are
byte-identical. `--out` is a local folder of its own (never a pipeline folder: etl.export.destination);
a folder holding earlier annotations is replaced only with `--overwrite`, and one holding any other
file is refused. Everything that can refuse runs before any engine starts.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional

from pyspark.sql import functions as F

from etl.engine.session import engine_step
from etl.export.destination import LOCAL_STAGING, MANIFEST, SUCCESS, DestinationError, check_out, discard_staging
from etl.export.filters import ResolvedFilter
from etl.export.object_store import LocalTarget
from etl.progress import step
from etl.project.config import Config
from etl.project.project import Project
from etl.project.tables import DATABASE
from etl.warehouse.store import table_store

KIND = "mindone annotations"
PER = ("part", "folder")
HEADER = ("dir", "text")
STAGING = f"{LOCAL_STAGING}/annotations"


class AnnotationError(RuntimeError):
    """Annotations that cannot be written as asked; the message says why."""


@dataclass(frozen=True)
class AnnotationRequest:
    filter: Optional[ResolvedFilter]  # None: every row with an image
    out: str
    per: str = "part"
    overwrite: bool = False


@dataclass(frozen=True)
class AnnotationPlan:
    """Annotations fixed before any engine starts: the request, the table version, the image folders
    (folder -> its part name) and the files of earlier annotations that `--overwrite` replaces."""
    request: AnnotationRequest
    source: dict
    parts: Mapping[str, str]
    replaced: tuple[str, ...]


@dataclass(frozen=True)
class AnnotationResult:
    manifest: dict

    @property
    def totals(self) -> dict:
        return self.manifest["totals"]


def plan_annotations(project: Project, config: Config, request: AnnotationRequest,
                     pipeline_folders: Mapping[str, str]) -> AnnotationPlan:
    if request.per not in PER:
        raise AnnotationError(f"--per: expected one of {', '.join(PER)}, got {request.per!r}")
    if "://" in request.out:
        raise AnnotationError(f"--out: annotations go to a local folder (mindone reads them beside the images), "
                              f"not {request.out}")
    check_out(request.out, pipeline_folders)
    parts = image_parts(config.images)
    path = project.wide_table.path(config)
    store = table_store(config)
    if not store.exists(path):
        raise AnnotationError(f"{DATABASE}.{project.wide_table.name} is not built yet at {path}: run build first")
    source = {"table": f"{DATABASE}.{project.wide_table.name}", "path": path, "format": config.format,
              "version": store.version(path)}
    return AnnotationPlan(request, source, parts, earlier_annotations(request.out, request.overwrite))


def image_parts(images: Iterable[str]) -> dict[str, str]:
    """Each image folder of the config with its part name (its last path segment: the name mindone's
    CSVs and `dir`s use), refusing two folders of one name: their CSVs would overwrite each other."""
    parts: dict[str, str] = {}
    for folder in images:
        folder = folder.rstrip("/")
        name = folder.rsplit("/", 1)[-1]
        clash = next((other for other, other_name in parts.items() if other_name == name), None)
        if clash is not None:
            raise AnnotationError(f"images: {clash} and {folder} are both named {name!r}; annotations name each "
                                  "CSV after its image folder, so give the folders distinct names")
        parts[folder] = name
    if not parts:
        raise AnnotationError("images: the config lists no img2dataset output folder, so no row has an image; "
                              "add the download's folder under images: and rebuild")
    return parts


def earlier_annotations(out: str, overwrite: bool) -> tuple[str, ...]:
    """The files earlier annotations left in `out`, which `--overwrite` replaces; refuse a folder
    holding any other file, and earlier annotations without `--overwrite`."""
    target = LocalTarget(Path(out))
    present = [name for name in target.list_files() if not name.startswith(f"{STAGING}/")]
    if not present:  # empty, or only the staging of an interrupted run (rewritten from scratch)
        return ()
    try:
        manifest = target.read_json(MANIFEST)
    except ValueError:  # not JSON: a file of the user's
        manifest = None
    ours = {SUCCESS, f"{MANIFEST}.partial"}
    if isinstance(manifest, dict) and manifest.get("kind") == KIND:
        ours |= {MANIFEST, *(entry["name"] for entry in manifest.get("files", []))}
    foreign = [name for name in present if name not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", … {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise DestinationError(f"--out: {out!r} holds files no annotations run wrote ({shown}); "
                               "write the annotations to an empty folder")
    if not overwrite:
        raise DestinationError(f"--out: {out!r} holds earlier annotations; pass --overwrite to replace them, "
                               "or choose another folder")
    return tuple(sorted(present, key=lambda name: name != SUCCESS))  # _SUCCESS goes first


def annotation_line(image_path: str, parts: Mapping[str, str], per: str) -> tuple[str, str]:
    """(CSV file name, dir) of one image: see the module docstring."""
    folder = max((f for f in parts if image_path.startswith(f + "/")), key=len, default=None)
    if folder is None:
        raise AnnotationError(f"image_path {image_path!r} lies in none of the config's images folders "
                              f"({', '.join(parts)}); build the table with this config first")
    name, inside = parts[folder], image_path[len(folder) + 1:]
    if "#" in inside:  # a member of a webdataset tar or a parquet shard
        shard = inside.split("#", 1)[0].rsplit(".", 1)[0]
        return (f"{name}.csv", image_path) if per == "part" else (f"{name}/{shard}.csv", image_path)
    shard = inside.split("/", 1)[0]
    return (f"{name}.csv", f"{name}/{inside}") if per == "part" else (f"{name}/{shard}.csv", inside)


def write_annotations(spark, config: Config, plan: AnnotationPlan) -> AnnotationResult:
    request, source = plan.request, plan.source
    rows = table_store(config).read(spark, source["path"], source["version"])
    if request.filter is not None:
        rows = rows.filter(request.filter.where)
    with engine_step("annotations: counting rows"):
        counted = rows.agg(F.count(F.lit(1)).alias("rows"), F.count("image_path").alias("with_image")).first()
    images = (rows.where(F.col("image_path").isNotNull()).groupBy("image_path")
              .agg(F.min("text").alias("text"), (F.min("text") != F.max("text")).alias("several_captions"))
              .orderBy("image_path"))
    staging = Path(request.out) / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with step(f"[annotations] writing mindone CSVs (one per {request.per}) of {source['table']}"), \
                engine_step("annotations: streaming images"):
            files, several = _write_csvs(images.toLocalIterator(), plan.parts, request.per, staging)
        if not files:
            where = f" where {request.filter.where}" if request.filter else ""
            raise AnnotationError(f"no row of {source['table']}{where} has a downloaded image "
                                  f"({counted['rows']:,} rows): nothing to annotate")
        manifest = _manifest(plan, files, counted["rows"], counted["with_image"], several)
        target = LocalTarget(Path(request.out))
        with step(f"[annotations] publishing {len(files)} CSV files to {request.out}"):
            target.remove(list(plan.replaced))
            for entry in files:
                target.put_file(staging / entry["name"], entry["name"])
            target.write_bytes(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            target.write_bytes(SUCCESS, b"")
    finally:
        discard_staging(staging.parent, [staging.name])
    return AnnotationResult(manifest)


def _write_csvs(images: Iterable, parts: Mapping[str, str], per: str, staging: Path) -> tuple[list[dict], int]:
    """Stream the ordered images into one CSV after another; each CSV's lines arrive together because
    the image paths are sorted and every CSV holds one folder's (or one shard's) paths."""
    files: list[dict] = []
    written: set[str] = set()
    several = 0
    handle = writer = None
    try:
        for image in images:
            name, directory = annotation_line(image["image_path"], parts, per)
            if not files or files[-1]["name"] != name:
                if handle is not None:
                    handle.close()
                if name in written:
                    raise AnnotationError(f"{name}: its images are not contiguous in image_path order "
                                          f"(at {image['image_path']!r}); is one images folder inside another?")
                path = staging / name
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = open(path, "w", encoding="utf-8", newline="")
                writer = csv.writer(handle, lineterminator="\n")  # pandas' to_csv quoting and line ends
                writer.writerow(HEADER)
                files.append({"name": name, "rows": 0})
                written.add(name)
            writer.writerow((directory, image["text"]))
            files[-1]["rows"] += 1
            several += bool(image["several_captions"])
    finally:
        if handle is not None:
            handle.close()
    for entry in files:
        entry.update(_file_stats(staging / entry["name"]))
    return files, several


def _file_stats(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:  # a part's CSV runs to hundreds of MB
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _manifest(plan: AnnotationPlan, files: list[dict], rows: int, with_image: int, several: int) -> dict:
    request = plan.request
    images = sum(entry["rows"] for entry in files)
    return {
        "kind": KIND,
        "per": request.per,
        "filter": None if request.filter is None else {"name": request.filter.name, "where": request.filter.where},
        "source": plan.source,
        "parts": dict(sorted(plan.parts.items())),
        "files": files,
        "totals": {"rows": rows, "rows_without_image": rows - with_image, "images": images,
                   "rows_sharing_an_image": with_image - images, "images_with_several_captions": several,
                   "files": len(files), "bytes": sum(entry["bytes"] for entry in files)},
    }


def copy_commands(plan: AnnotationPlan) -> list[str]:
    """The shell lines that put the CSVs where mindone reads them: beside (per part) or inside
    (per folder) each image folder, in its parent, the data folder."""
    out = plan.request.out.rstrip("/")
    lines = []
    for folder, name in sorted(plan.parts.items()):
        data = shlex.quote(os.path.dirname(folder) or ".")
        lines.append(f"cp {shlex.quote(f'{out}/{name}.csv')} {data}/" if plan.request.per == "part"
                     else f"cp -r {shlex.quote(f'{out}/{name}')} {data}/")
    return lines
