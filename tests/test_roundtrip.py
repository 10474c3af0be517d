"""The downloader in the loop: export shards, real img2dataset downloads them from a local server,
the next build folds its output back into the wide table (path and real type of every image)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from etl import laion_hash
from helpers import read_delta, serve_folder

FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}


@pytest.fixture
def image_server(tmp_path):
    """Serves one real image per format under its real extension; other paths are 404."""
    root = tmp_path / "www"
    root.mkdir()
    for index, (suffix, pil_format) in enumerate(FORMATS.items()):
        buffer = io.BytesIO()
        Image.new("RGB", (16 + index, 16), (40 * index, 90, 200)).save(buffer, format=pil_format)
        (root / f"image{index}.{suffix}").write_bytes(buffer.getvalue())
    with serve_folder(root) as url:
        yield url


def write_sources(root: Path, base_url: str) -> list[tuple[str, str]]:
    samples = [(f"{base_url}/image{i}.{suffix}", f"an image saved as {suffix}") for i, suffix in enumerate(FORMATS)]
    samples += [(f"{base_url}/missing{i}.jpg", f"a missing image {i}") for i in range(2)]
    urls, texts = zip(*samples)
    count = len(samples)
    (root / "base").mkdir(parents=True)
    (root / "joined").mkdir()
    pq.write_table(pa.table({"SAMPLE_ID": list(range(count)), "URL": list(urls), "TEXT": list(texts),
                             "HEIGHT": [600] * count, "WIDTH": [800] * count, "LICENSE": ["?"] * count,
                             "NSFW": ["UNLIKELY"] * count, "similarity": [0.3] * count}),
                   root / "base/part-00000.parquet")
    pq.write_table(pa.table({"URL": list(urls), "TEXT": list(texts), "WIDTH": [600] * count, "HEIGHT": [800] * count,
                             "similarity": [0.3] * count, "hash": [laion_hash(u, t) for u, t in samples],
                             "punsafe": [0.1] * count, "pwatermark": [0.1] * count, "LANGUAGE": ["en"] * count}),
                   root / "joined/part-00000.parquet")
    return samples


def config_text(root: Path, images: list[str]) -> str:
    return json.dumps({
        "warehouse": str(root / "warehouse"),
        "spark": {"shuffle_partitions": 2},
        "sources": {"laion2B-en": {"base": str(root / "sources/base/*.parquet"),
                                   "joined": str(root / "sources/joined/*.parquet")}},
        "images": images,
    })


def test_export_download_and_fold_back(tmp_path, image_server, img2dataset_bin, run_cli):
    samples = write_sources(tmp_path / "sources", image_server)
    config = tmp_path / "roundtrip.yaml"
    config.write_text(config_text(tmp_path, []))
    assert run_cli("build", "--config", str(config))[0] == 0
    code, stdout, _ = run_cli("export", "--config", str(config), "--where", "width >= 512", "--out",
                              str(tmp_path / "export"), "--columns", "hash", "--rows-per-shard", "4")
    assert code == 0, stdout

    images = tmp_path / "images"
    subprocess.run(
        [img2dataset_bin, "--url_list", str(tmp_path / "export/shards"), "--input_format", "parquet",
         "--url_col", "URL", "--caption_col", "TEXT", "--save_additional_columns", '["hash"]',
         "--output_format", "webdataset", "--output_folder", str(images), "--disable_all_reencoding", "True",
         "--processes_count", "1", "--thread_count", "4", "--number_sample_per_shard", "4",
         "--enable_wandb", "False", "--distributor", "multiprocessing", "--retries", "0", "--timeout", "5"],
        check=True, capture_output=True, timeout=300, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )  # fmt: skip
    assert sorted(p.name for p in images.glob("*.tar")) == ["00000.tar", "00001.tar"]

    config.write_text(config_text(tmp_path, [str(images)]))
    assert run_cli("build", "--config", str(config))[0] == 0

    wide = {r["url"]: r for r in read_delta(tmp_path / "warehouse/dms/dms_laion_wide").to_pylist()}
    assert len(wide) == len(samples)
    for index, suffix in enumerate(FORMATS):
        row = wide[f"{image_server}/image{index}.{suffix}"]
        assert row["image_suffix"] == suffix
        shard, _, member = row["image_path"].partition("#")
        assert shard.startswith(f"{images}/0000") and shard.endswith(".tar") and member.endswith(".jpg")
    for index in range(2):
        row = wide[f"{image_server}/missing{index}.jpg"]
        assert row["image_path"] is None and row["image_suffix"] is None
    index_rows = read_delta(tmp_path / "warehouse/ods/ods_image_index").to_pylist()
    assert sorted(r["status"] for r in index_rows) == ["failed_to_download"] * 2 + ["success"] * 4
    assert all(r["source_hash"] == r["hash"] for r in index_rows)

    code, stdout, _ = run_cli("clip-input", str(images))
    assert code == 0 and stdout.splitlines()[0] == f"{images}/{{00000..00001}}.tar"
