"""Shared test helpers: configs over test sources, tables read back independently, row-set
comparison, the CLI's one-line errors, the runs table, HTML pages as a small DOM. Fixtures and
hooks live in conftest.py."""

from __future__ import annotations

import math
import os
import re
import shutil
from collections import Counter
from contextlib import contextmanager
from functools import cache
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from etl.cli import main
from planted import planted_config, write_planted_sources

REPO = Path(__file__).resolve().parents[1]
REAL_PAIRS = REPO.parent / "shared" / "data" / "laion_url_text_10k.parquet"


# What both engines say of a base file whose string column TEXT holds bytes that are not UTF-8.
INVALID_UTF8_TEXT = "string column TEXT holds bytes that are not valid UTF-8"


def write_invalid_utf8_base_file(path: Path, similarity=(0.25, 0.5)) -> Path:
    """A two-row base part whose string column TEXT holds bytes that are not UTF-8 in its second
    row (written unchecked, as some writers do); see INVALID_UTF8_TEXT."""
    texts = pa.array([b"fine", b"caf\xe9"], pa.binary()).cast(pa.string(), safe=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "SAMPLE_ID": [50, 51], "URL": ["http://bad-files.example/a.jpg", "http://bad-files.example/b.jpg"],
        "TEXT": texts, "HEIGHT": [1, 2], "WIDTH": [3, 4], "LICENSE": ["?", "?"], "NSFW": ["UNLIKELY"] * 2,
        "similarity": list(similarity)}), path)
    return path


def demo_config(sources: Path, warehouse: Path, path: Path, with_images: bool = True,
                engine: str = "sail", fmt: str = "delta") -> Path:
    """conf/demo.yaml pointed at `sources` and `warehouse`: the demo's own config is what is tested."""
    text = (REPO / "conf" / "demo.yaml").read_text()
    text = text.replace("../data/demo/sources", str(sources)).replace("../data/demo/warehouse", str(warehouse))
    text = text.replace("engine: sail", f"engine: {engine}").replace("format: delta", f"format: {fmt}")
    if not with_images:
        text = text.split("\nimages:")[0] + "\nimages: []\n"
    path.write_text(text)
    return path


def build_synthetic(root: Path, rows: int, seed: int, images: str | None = "webdataset"):
    """Synthetic sources under `root`, built on Sail with the demo config: (summary, config path)."""
    from etl.synth import generate

    summary = generate(root / "sources", rows=rows, seed=seed, images=images)
    config = demo_config(root / "sources", root / "warehouse", root / "demo.yaml", with_images=images is not None)
    assert main(["build", "--config", str(config)]) == 0
    return summary, config


def write_planted_config(root: Path, warehouse: Path | None = None, name: str = "planted", extra: str = "",
                         fmt: str = "delta", engine: str = "sail") -> Path:
    """`root/<name>.yaml` over the planted sources in `root/sources`, building into `warehouse`
    (`root/warehouse` unless given); `extra` is YAML appended to it."""
    path = root / f"{name}.yaml"
    path.write_text(planted_config(root / "sources", warehouse or root / "warehouse", fmt=fmt, engine=engine) + extra)
    return path


def write_planted_project(root: Path, warehouse: Path | None = None, **config) -> Path:
    """The planted sources under `root/sources` and a config over them (see write_planted_config)."""
    write_planted_sources(root / "sources")
    return write_planted_config(root, warehouse, **config)


@contextmanager
def serve_folder(root: Path):
    """An HTTP server on 127.0.0.1 serving `root`; yields its base URL."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url


@contextmanager
def serving(server):
    """Run an HTTP server bound on 127.0.0.1 in a thread; yields its base URL, then shuts it down."""
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_in_own_group(argv: list[str], *, cwd, env: dict, timeout: float, what: str):
    """Run `argv` in a process group of its own, stdin closed, with a deadline. On a timeout the
    group is killed and the test fails naming `what` with the output's tails; afterwards whatever
    the command left running in the background (its group) is killed too."""
    import signal
    import subprocess

    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{what} ran past {timeout:.0f} s:\n{out[-3000:]}\n{err[-3000:]}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def read_delta(path) -> pa.Table:
    """A Delta table read by delta-rs: independent of the engine that wrote it."""
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_table()


def read_parquet_table(path) -> pa.Table:
    """A hive-partitioned parquet table (JVM engine output), partition column last."""
    return ds.dataset(str(path), format="parquet", partitioning="hive").to_table()


@cache
def _table_layers() -> dict[str, str]:
    from etl.project.project import load_project

    return {table.name: table.layer for table in load_project().tables}


def table_dir(warehouse: Path, name: str) -> Path:
    """Where the build writes table `name` under `warehouse`."""
    return warehouse / _table_layers()[name] / name


def warehouse_tables(warehouse: Path) -> dict[str, Path]:
    """Every table a build writes under `warehouse`, the project's and the bookkeeping ones, by name."""
    from etl.warehouse.meta import META_TABLES

    return {**{name: table_dir(warehouse, name) for name in _table_layers()},
            **{name: warehouse / "meta" / name for name in META_TABLES}}


def has_data_files(warehouse: Path, name: str) -> bool:
    """A write of the table has begun: data files exist (before its commit does)."""
    return any(p for p in table_dir(warehouse, name).rglob("*.parquet") if "_delta_log" not in p.parts)


def committed(warehouse: Path, name: str) -> bool:
    """Whether table `name` has at least one Delta commit."""
    return any((table_dir(warehouse, name) / "_delta_log").glob("*.json"))


STOP_POINTS = ("mid_ods_write", "between_layers", "mid_dms_write")


def stop_point_reached(warehouse: Path, point: str):
    """A probe for where a test stops a running build: inside the first ODS write, after an ODS
    table committed, or inside the wide table's write."""
    return {
        "mid_ods_write": lambda: has_data_files(warehouse, "ods_laion_base"),
        "between_layers": lambda: committed(warehouse, "ods_laion_joined"),
        "mid_dms_write": lambda: has_data_files(warehouse, "dms_laion_wide"),
    }[point]


def runs(warehouse: Path, fmt: str = "delta") -> list[dict]:
    """The `runs` table's rows, oldest run first (run ids sort by start time)."""
    path = warehouse / "meta" / "runs"
    rows = read_delta(path) if fmt == "delta" else read_parquet_table(path)
    return sorted(rows.to_pylist(), key=lambda r: r["run_id"])


def one_line(err: str) -> str:
    """The CLI's one `laion-etl:` line on stderr (log lines may precede it)."""
    lines = [line for line in err.strip().splitlines() if line.startswith("laion-etl:")]
    assert len(lines) == 1, err
    return lines[0]


def _comparable(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 5)
    return value


def row_counter(table: pa.Table) -> Counter:
    return Counter(tuple(_comparable(v) for v in row.values()) for row in table.to_pylist())


def assert_same_rows(actual: pa.Table, expected: pa.Table) -> None:
    """Same column names in order, same count, and the multiset difference empty both ways."""
    assert actual.column_names == expected.column_names
    assert actual.num_rows == expected.num_rows
    left, right = row_counter(actual), row_counter(expected)
    assert left - right == Counter(), f"rows only in actual: {list((left - right).elements())[:5]}"
    assert right - left == Counter(), f"rows only in expected: {list((right - left).elements())[:5]}"


def required_on_ci(reason: str) -> None:
    """Tools the tests need must be there on CI (scripts/setup.sh --test installs them)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} on CI: scripts/setup.sh --test should have installed it")
    pytest.skip(f"{reason}: run scripts/setup.sh --test")


def need_java() -> None:
    if shutil.which("java") is None:
        required_on_ci("java (JDK 17) is not installed")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- HTML pages (the data-quality report) as a small DOM, to find elements by tag, class and attribute


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.content = []  # text and child nodes, in document order

    @property
    def classes(self) -> set:
        return set((self.attrs.get("class") or "").split())

    @property
    def children(self) -> list:
        return [part for part in self.content if isinstance(part, Node)]

    def text(self) -> str:
        return "".join(part if isinstance(part, str) else part.text() for part in self.content)

    def iter(self):
        for child in self.children:
            yield child
            yield from child.iter()

    def find_all(self, tag=None, cls=None, **attrs):
        attrs = {key.replace("_", "-"): value for key, value in attrs.items()}
        return [node for node in self.iter()
                if (tag is None or node.tag == tag) and (cls is None or set(cls.split()) <= node.classes)
                and all(node.attrs.get(key) == value for key, value in attrs.items())]

    def find(self, tag=None, cls=None, **attrs):
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag or '*'} class={cls!r} {attrs}> on the page"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {})
        self.order = []  # (tag, id) of every element, in document order

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.content.append(node)
        self.order.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.content.append(node)
        self.order.append(node)

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.content.append(data)


def parse(html: str) -> _Builder:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
