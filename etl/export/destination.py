"""An export writes only into a folder of its own.

`--out` names a folder of the user's, and a mistyped one may hold their own files or the
pipeline's. So, before any engine starts, an export refuses a destination that is, contains or
lies inside the warehouse, a source folder or an image folder, and one that holds anything but
the same export (whose rerun is then a no-op or a resume). `--overwrite` removes what exports
wrote there (manifest, `_SUCCESS`, shards, staging) and nothing else; files no export wrote where
img2dataset would read them (`shards/`, any `.parquet` or `.json`) stop even that, because the
new shards would be mixed with them.

What an export wrote is told from the rest by its manifest (the shards it lists), by its staging
folder (the shards it planned: an interrupted export has no manifest yet) and, on S3, by the row
count and checksum every shard is uploaded with (its staging lives on the machine that ran it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Optional

from etl.ingest.storage import is_within, normal_location
from etl.export.layouts import DEFAULT_LAYOUT, SHARDS_DIR
from etl.export.object_store import ExportTarget
from etl.project.config import is_remote

MANIFEST, SUCCESS, STAGING_DONE = "manifest.json", "_SUCCESS", "_STAGED"
LOCAL_STAGING = "_staging"
ANY_EXPORT = (SUCCESS, f"{MANIFEST}.partial", f"{SUCCESS}.partial")  # written by whichever export is there
EXPORT_ID = re.compile(r"[0-9a-f]{16}")
STAGED_ELSEWHERE = "staged elsewhere"  # owns S3 shards whose staging this machine does not hold
NAMES_SHOWN = 5


class DestinationError(ValueError):
    """A destination an export may not write into; the message says why in one line."""


def check_out(out: str, pipeline_folders: Mapping[str, str]) -> None:
    """Refuse an `--out` that is a file, or that is, contains or lies inside one of the folders the
    pipeline reads or writes (`pipeline_folders`: folder -> what it is, e.g. "the warehouse")."""
    if out.startswith("s3://"):
        segments = out[len("s3://"):].rstrip("/").split("/")
        if any(segment in ("", ".", "..") for segment in segments):
            raise DestinationError(f"--out: {out!r} has an empty, '.' or '..' part; object keys are not resolved "
                                   "like paths, so name the bucket and prefix plainly")
    elif os.path.exists(out) and not os.path.isdir(out):
        raise DestinationError(f"--out: {out!r} is a file; name a folder for the export")
    target = normal_location(out)
    for folder, kind in pipeline_folders.items():
        root = normal_location(folder)
        relation = ("is" if target == root else "is inside" if is_within(target, root)
                    else "contains" if is_within(root, target) else None)
        if relation:
            raise DestinationError(f"--out: {out!r} {relation} {kind} {folder}; export to a folder of its own")


def staging_root(out: str) -> Path:
    """Where exports to `out` stage their shards, one folder per export id: beside a local export
    (outside `shards/`), else a local temp area kept apart per destination (publishing moves staged
    shards to that destination only)."""
    if not is_remote(out):
        return Path(out) / LOCAL_STAGING
    destination = hashlib.sha256(out.rstrip("/").encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "laion-etl-export" / destination


def discard_staging(root: Path, export_ids: Iterable[str]) -> None:
    """Remove the staging folders of `export_ids`, and the staging root once nothing else is in it."""
    for export_id in export_ids:
        shutil.rmtree(root / export_id, ignore_errors=True)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def claim(target: ExportTarget, out: str, export_id: str, overwrite: bool) -> None:
    """Make `out` the folder of export `export_id`, or refuse (see the module docstring)."""
    staging = staging_root(out)
    staged = _staged_exports(staging)
    manifest = _export_manifest(target)
    owners, foreign = _sort(target, manifest, staged, staging_inside=not is_remote(out))
    exports = set(owners.values()) - {None}
    in_the_way = [name for name in foreign if name.startswith(f"{SHARDS_DIR}/") or name.endswith((".parquet", ".json"))]
    if foreign and not exports and not overwrite:
        beside = "" if in_the_way else ", or pass --overwrite to export beside these files"
        raise DestinationError(f"--out: {out!r} is not empty and holds no export ({_names(foreign)}); "
                               f"choose an empty folder{beside}")
    if in_the_way:
        raise DestinationError(f"--out: {out!r} holds files no export wrote where img2dataset reads "
                               f"({_names(in_the_way)}); move them away or choose another folder (--overwrite "
                               "removes only what exports wrote)")
    if overwrite:
        target.remove([name for name in owners if not name.startswith(f"{LOCAL_STAGING}/")])
        discard_staging(staging, staged)
    elif exports - {export_id}:
        others = [name for name, owner in owners.items() if owner in exports - {export_id}]
        raise DestinationError(f"--out: {out!r} holds {_another_export(manifest, export_id, others)}; pass --overwrite "
                               "to replace it, or choose another folder")


def _staged_exports(root: Path) -> dict[str, set[str]]:
    """Export id -> the part names it planned (none while the engine is still staging them)."""
    if not root.is_dir():
        return {}
    staged = {}
    for folder in root.iterdir():
        if folder.is_dir() and EXPORT_ID.fullmatch(folder.name):
            done = folder / STAGING_DONE
            staged[folder.name] = set(json.loads(done.read_text())["parts"]) if done.is_file() else set()
    return staged


def _export_manifest(target: ExportTarget) -> Optional[dict]:
    try:
        manifest = target.read_json(MANIFEST)
    except ValueError:  # not JSON: a file of the user's
        return None
    is_export = isinstance(manifest, dict) and EXPORT_ID.fullmatch(str(manifest.get("export_id")))
    return manifest if is_export else None


def _sort(target: ExportTarget, manifest: Optional[dict], staged: Mapping[str, set[str]],
          staging_inside: bool) -> tuple[dict[str, Optional[str]], list[str]]:
    """The files an export wrote, each with the id of the export that wrote it (None: any export),
    and the files no export wrote."""
    listed = {shard["name"] for shard in manifest["shards"]} if manifest else set()
    owners, foreign = {}, []
    for name in target.list_files():
        parts = name.split("/", 2)
        if name in ANY_EXPORT:
            owners[name] = None
        elif manifest and (name == MANIFEST or name in listed):
            owners[name] = manifest["export_id"]
        elif staging_inside and len(parts) == 3 and parts[0] == LOCAL_STAGING and parts[1] in staged:
            owners[name] = parts[1]
        elif planners := [staged_id for staged_id, planned in staged.items() if name in planned]:
            owners[name] = planners[0]
        elif name.endswith(".parquet") and target.export_written(name):
            owners[name] = STAGED_ELSEWHERE
        else:
            foreign.append(name)
    return owners, foreign


def _another_export(manifest: Optional[dict], export_id: str, names: list[str]) -> str:
    if manifest and manifest["export_id"] != export_id:
        source = manifest["source"]
        return (f"another export ({manifest.get('layout', DEFAULT_LAYOUT)} layout, {source['table']} version "
                f"{source['version']} where {manifest['filter']['where']}, "
                f"{manifest['rows_per_shard']} rows per shard)")
    return f"an unfinished export this one cannot resume ({_names(names)})"


def _names(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:NAMES_SHOWN])
    return shown if len(names) <= NAMES_SHOWN else f"{shown}, … {len(names) - NAMES_SHOWN} more"
