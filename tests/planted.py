"""A tiny hand-made LAION source tree with planted cases, and the wide-table rows it must give.

Input rows and expected output rows sit side by side so a reader can check each case by eye:
A has an aesthetic score from both sources (the first wins) and a PNG image saved as .jpg;
B failed to download and its first aesthetic source has a NaN score (the second source's wins);
D is one sample (one hash) in two base files with different SAMPLE_IDs; E has a null TEXT and a
NaN SAMPLE_ID; F is in joined only, yet has an image and a score (a null one in the first source,
so the second's); G is in a subset without LANGUAGE.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from etl import laion_hash

A = ("http://a.example/1.jpg", "a cat on a mat")
B = ("http://b.example/2.png", "ein Hund 🐕 im Schnee")
D = ("http://d.example/dup.jpg", "duplicate sample")
E = ("http://e.example/5.jpg", None)
F = ("http://f.example/6.jpg", "only in joined")
G = ("http://g.example/7.jpg", "без языка")
IMAGE_KEY_A, IMAGE_KEY_B, IMAGE_KEY_F = "000000000", "000000001", "000000002"

WIDE_SCHEMA = pa.schema([
    ("sample_id", pa.int64()), ("url", pa.string()), ("text", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("similarity", pa.float64()), ("hash", pa.int64()), ("punsafe", pa.float32()),
    ("pwatermark", pa.float32()), ("image_suffix", pa.string()), ("license", pa.string()), ("nsfw", pa.string()),
    ("aesthetic_score", pa.float32()), ("language", pa.string()), ("file_name", pa.string()),
    ("image_path", pa.string()), ("subset", pa.string()),
])


def _write(path: Path, columns: dict, schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), path)


def _image_bytes(pil_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format=pil_format)
    return buffer.getvalue()


def write_planted_sources(root: Path) -> None:
    """Write the planted source tree under `root` (layout as `synth` writes it)."""
    base_int = pa.schema([("SAMPLE_ID", pa.int64()), ("URL", pa.string()), ("TEXT", pa.string()),
                          ("HEIGHT", pa.int32()), ("WIDTH", pa.int32()), ("LICENSE", pa.string()),
                          ("NSFW", pa.string()), ("similarity", pa.float64())])
    base_float = pa.schema([("SAMPLE_ID", pa.float64()), ("URL", pa.string()), ("TEXT", pa.string()),
                            ("HEIGHT", pa.float64()), ("WIDTH", pa.float64()), ("LICENSE", pa.string()),
                            ("NSFW", pa.string()), ("similarity", pa.float64()),
                            ("__index_level_0__", pa.int64())])
    # Base files swap the two: WIDTH holds the true height, HEIGHT the true width.
    _write(root / "laion2B-en/part-00000.parquet", {
        "SAMPLE_ID": [1, 2, 3], "URL": [A[0], B[0], D[0]], "TEXT": [A[1], B[1], D[1]],
        "HEIGHT": [640, 1024, 100], "WIDTH": [480, 768, 200], "LICENSE": ["?", "?", "?"],
        "NSFW": ["UNLIKELY", "UNSURE", "UNLIKELY"], "similarity": [0.31, 0.35, 0.29]}, base_int)
    _write(root / "laion2B-en/part-00001.parquet", {
        "SAMPLE_ID": [7.0, float("nan")], "URL": [D[0], E[0]], "TEXT": [D[1], E[1]],
        "HEIGHT": [100.0, 300.0], "WIDTH": [200.0, 150.0], "LICENSE": ["cc-by", "?"],
        "NSFW": ["NSFW", "UNLIKELY"], "similarity": [0.29, 0.4], "__index_level_0__": [0, 1]}, base_float)
    joined = pa.schema([("URL", pa.string()), ("TEXT", pa.string()), ("WIDTH", pa.int32()), ("HEIGHT", pa.int32()),
                        ("similarity", pa.float64()), ("hash", pa.int64()), ("punsafe", pa.float32()),
                        ("pwatermark", pa.float32()), ("LANGUAGE", pa.string())])
    _write(root / "laion2B-en-joined/part-00000.parquet", {
        "URL": [A[0], B[0], D[0], E[0], F[0]], "TEXT": [A[1], B[1], D[1], E[1], F[1]],
        "WIDTH": [640, 1024, 100, 300, 50], "HEIGHT": [480, 768, 200, 150, 60],
        "similarity": [0.31, 0.35, 0.29, 0.4, 0.3],
        # A's source hash is wrong on purpose: ODS keeps it beside the recomputed one.
        "hash": [12345, laion_hash(*B), laion_hash(*D), laion_hash(*E), laion_hash(*F)],
        "punsafe": [0.01, None, 0.5, 0.2, 0.9], "pwatermark": [0.1, 0.2, None, 0.3, 0.4],
        "LANGUAGE": ["en", None, "en", "en", "en"]}, joined)
    aesthetic = pa.schema([("URL", pa.string()), ("TEXT", pa.string()), ("WIDTH", pa.int32()), ("HEIGHT", pa.int32()),
                           ("similarity", pa.float64()), ("hash", pa.int64()), ("punsafe", pa.float32()),
                           ("pwatermark", pa.float32()), ("aesthetic", pa.float32())])
    _write(root / "laion2B-en-aesthetic/part-00000.parquet", {
        "URL": [A[0], B[0], F[0]], "TEXT": [A[1], B[1], F[1]], "WIDTH": [640, 1024, 50], "HEIGHT": [480, 768, 60],
        "similarity": [0.31, 0.35, 0.3], "hash": [laion_hash(*A), laion_hash(*B), laion_hash(*F)],
        "punsafe": [0.01, None, 0.9], "pwatermark": [0.1, 0.2, 0.4], "aesthetic": [5.5, float("nan"), None]}, aesthetic)
    improved = aesthetic.set(8, pa.field("AESTHETIC_SCORE", pa.float64()))
    _write(root / "improved_aesthetics_4.5plus/part-00000.parquet", {
        "URL": [A[0], B[0], F[0]], "TEXT": [A[1], B[1], F[1]], "WIDTH": [640, 1024, 50], "HEIGHT": [480, 768, 60],
        "similarity": [0.31, 0.35, 0.3], "hash": [laion_hash(*A), laion_hash(*B), laion_hash(*F)],
        "punsafe": [0.01, None, 0.9], "pwatermark": [0.1, 0.2, 0.4], "AESTHETIC_SCORE": [5.6, 6.25, 7.75]}, improved)
    _write(root / "laion1B-nolang/part-00000.parquet", {
        "SAMPLE_ID": [9], "URL": [G[0]], "TEXT": [G[1]], "HEIGHT": [32], "WIDTH": [64],
        "LICENSE": ["?"], "NSFW": ["UNLIKELY"], "similarity": [0.33]}, base_int)
    _write(root / "laion1B-nolang-joined/part-00000.parquet", {
        "URL": [G[0]], "TEXT": [G[1]], "WIDTH": [32], "HEIGHT": [64], "similarity": [0.33],
        "hash": [laion_hash(*G)], "punsafe": [0.05], "pwatermark": [0.06]},
        pa.schema([f for f in joined if f.name != "LANGUAGE"]))
    _write_images(root / "images")


def _write_images(folder: Path) -> None:
    """One img2dataset webdataset shard: A downloaded (a PNG named .jpg), B failed, F downloaded (a GIF)."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "00000.parquet", {
        "key": [IMAGE_KEY_A, IMAGE_KEY_B, IMAGE_KEY_F], "url": [A[0], B[0], F[0]], "caption": [A[1], B[1], F[1]],
        "status": ["success", "failed_to_download", "success"], "error_message": [None, "HTTP Error 404", None],
        "width": [4, None, 4], "height": [4, None, 4], "original_width": [4, None, 4],
        "original_height": [4, None, 4], "sha256": ["x" * 64, None, "y" * 64],
        "hash": [laion_hash(*A), laion_hash(*B), laion_hash(*F)]},
        pa.schema([("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("status", pa.string()),
                   ("error_message", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                   ("original_width", pa.int64()), ("original_height", pa.int64()), ("sha256", pa.string()),
                   ("hash", pa.int64())]))
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for key, sample, pil_format in ((IMAGE_KEY_A, A, "PNG"), (IMAGE_KEY_F, F, "GIF")):
            for name, payload in ((f"{key}.jpg", _image_bytes(pil_format)), (f"{key}.txt", sample[1].encode()),
                                  (f"{key}.json", json.dumps({"key": key}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def planted_config(root: Path, warehouse: Path, fmt: str = "delta", engine: str = "sail") -> str:
    return f"""
engine: {engine}
format: {fmt}
warehouse: {warehouse}
spark: {{shuffle_partitions: 2}}
sources:
  laion2B-en:
    base: {root}/laion2B-en/*.parquet
    joined: {root}/laion2B-en-joined/*.parquet
    aesthetic:
      - {root}/laion2B-en-aesthetic/*.parquet
      - {root}/improved_aesthetics_4.5plus/*.parquet
  laion1B-nolang:
    base: {root}/laion1B-nolang/*.parquet
    joined: {root}/laion1B-nolang-joined/*.parquet
images:
  - {root}/images
"""


def expected_wide_rows(root: Path) -> list[dict]:
    """dms_laion_wide for the planted tree, worked out by hand (one row per joined row)."""
    images = str(root / "images")

    def row(sample, sample_id, width, height, similarity, punsafe, pwatermark, suffix, license_, nsfw,
            aesthetic, language, image_path, subset, file_name="part-00000.parquet"):
        return {"sample_id": sample_id, "url": sample[0], "text": sample[1], "width": width, "height": height,
                "similarity": similarity, "hash": laion_hash(*sample), "punsafe": punsafe, "pwatermark": pwatermark,
                "image_suffix": suffix, "license": license_, "nsfw": nsfw, "aesthetic_score": aesthetic,
                "language": language, "file_name": file_name, "image_path": image_path, "subset": subset}

    return [
        row(A, 1, 640, 480, 0.31, 0.01, 0.1, "png", "?", "UNLIKELY", 5.5, "en",
            f"{images}/00000.tar#{IMAGE_KEY_A}.jpg", "laion2B-en"),
        row(B, 2, 1024, 768, 0.35, None, 0.2, None, "?", "UNSURE", 6.25, "en", None, "laion2B-en"),
        # D's two base rows: the first by file_name (part-00000) wins, so sample 3 and its license.
        row(D, 3, 100, 200, 0.29, 0.5, None, None, "?", "UNLIKELY", None, "en", None, "laion2B-en"),
        row(E, None, 300, 150, 0.4, 0.2, 0.3, None, "?", "UNLIKELY", None, "en", None, "laion2B-en"),
        # F has no base row, yet its hash's image and score (the first non-null one).
        row(F, None, 50, 60, 0.3, 0.9, 0.4, "gif", None, None, 7.75, "en",
            f"{images}/00000.tar#{IMAGE_KEY_F}.jpg", "laion2B-en"),
        row(G, 9, 32, 64, 0.33, 0.05, 0.06, None, "?", "UNLIKELY", None, "nolang", None, "laion1B-nolang"),
    ]
