"""The JVM laion_hash (etl/engine/jvm_hash.py, etl/engine/java/LaionHash.java): the same
numbers as mmh3, what JVM sessions run instead of the pandas UDF, and the pandas UDF again when
the jar cannot be built.

JVM sessions run in a child process (the engine is chosen once per process): this file, run as a
script, opens a JVM session with the CLI's `open_session`, hashes the cases and the 10k real
pairs, and writes what it saw to a folder the tests read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import mmh3
import pyarrow.parquet as pq
import pytest

from etl.cluster.package_zip import package_members
from etl.engine import jvm_hash
from helpers import INVALID_UTF8_TEXT, REAL_PAIRS, REPO, need_java, required_on_ci, write_invalid_utf8_base_file
from planted import planted_config

pytestmark = pytest.mark.jvm
CHILD_SECONDS = 600
PYTHON_UDF_NODES = ("ArrowEvalPython", "BatchEvalPython")
# One character of each UTF-8 width but 1; placed so that it straddles a 16-byte block's end.
WIDE_CHARACTERS = ("é", "€", "🐱")


def byte_length(url, text) -> int:
    return len((url + text).encode("utf-8"))


def boundary_cases() -> list[tuple[str, str]]:
    """(url, text) pairs of 15, 16, 17, 31, 32 and 33 UTF-8 bytes, each with a multi-byte
    character ending at or crossing byte 16 (or 32), split into url and text at several places."""
    cases = []
    for total in (15, 16, 17, 31, 32, 33):
        for character in WIDE_CHARACTERS:
            width = len(character.encode("utf-8"))
            block_end = 16 if total < 31 else 32
            before = min(block_end - width + 1, total - width)  # the character's first byte
            joined = "a" * before + character + "b" * (total - before - width)
            for split in (0, before, before + 1, len(joined)):
                cases.append((joined[:split], joined[split:]))
    return cases


def edge_cases() -> list[tuple]:
    cases = [(None, None), (None, "a cat on a mat"), ("https://x.org/cat.jpg", None), ("", ""),
             ("https://x.org/🐱.png", "cat 🐱🐈 on a mat"),  # 4-byte UTF-8
             ("https://例え.jp/画像", "日本語のテキスト"),
             ("https://x.org/", "é" * 50_000), ("https://x.org/", "z" * 100_000)]
    return cases + boundary_cases()


def test_boundary_cases_have_the_lengths_they_are_named_for():
    lengths = sorted({byte_length(url, text) for url, text in boundary_cases()})
    assert lengths == [15, 16, 17, 31, 32, 33]


# --- the child: a JVM session that hashes -----------------------------------------------------

def child(out: Path, config_path: Path, no_jar: bool) -> None:
    """Hash the edge cases (and, with the jar, the real pairs) on a JVM session; write results.json."""
    from etl.engine.session import open_session
    from etl.project.config import load_config

    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("etl.engine.jvm_hash").addHandler(handler)
    if no_jar:
        def no_javac():
            raise jvm_hash.JarBuildError("planted: javac not found")

        jvm_hash.build_jar = no_javac
    results = {}
    with open_session(load_config(config_path)) as spark:
        cases = spark.createDataFrame([(i, url, text) for i, (url, text) in enumerate(edge_cases())],
                                      "id int, url string, text string")
        cases.createOrReplaceTempView("cases")
        query = spark.sql("select id, laion_hash(url, text) as hash from cases")
        results["plan"] = query._jdf.queryExecution().executedPlan().toString()
        results["hashes"] = {row.id: row.hash for row in query.collect()}
        results["jars"] = spark.sparkContext.getConf().get("spark.jars", "")
        if not no_jar:
            results["lone_surrogate"] = lone_surrogate_error(spark)
            results["invalid_utf8"] = invalid_utf8_refusal(spark, out)
        if not no_jar and REAL_PAIRS.is_file():  # on CI it is (the real-pairs test says so)
            spark.read.parquet(str(REAL_PAIRS)).selectExpr("URL", "TEXT", "laion_hash(URL, TEXT) as hash") \
                .write.parquet(str(out / "real"))
    results["warnings"] = warnings
    (out / "results.json").write_text(json.dumps(results))


def invalid_utf8_refusal(spark, out: Path) -> dict:
    """Read a base file whose string column TEXT holds bytes that are not UTF-8 as the ODS does: the
    engine's error and the file error `explain_read_failure` makes of it (JVM Spark's reader takes
    such bytes unchecked, and the Java hash would hash them as replacement characters)."""
    from etl.ingest.sources import FamilyReader, SourceFile, explain_read_failure
    from etl.ingest.storage import read_footer
    from etl.project.project import load_project

    path = write_invalid_utf8_base_file(out / "invalid_utf8.parquet")
    source = SourceFile("base", "laion2B-en", read_footer(str(path)))
    rows = FamilyReader(spark, load_project().families["base"]).read(source).selectExpr("laion_hash(url, text) as hash")
    try:
        return {"read": [row.hash for row in rows.collect()]}
    except Exception as exc:
        return {"engine_error": str(exc)[:2000], "explained": str(explain_read_failure(exc, [source]))}


def lone_surrogate_error(spark) -> str:
    """The Java function's error for a url holding U+D800 alone. No Spark string can carry one (its
    UTF-8 conversions replace them), and py4j turns every Java String it returns into a Python str,
    so the string is made in the JVM, by splitting a StringBuilder, and passed on by reflection."""
    jvm = spark._jvm
    builder = jvm.java.lang.StringBuilder().appendCodePoint(0xD800).append("|a cat")
    gateway = spark.sparkContext._gateway
    arguments = gateway.new_array(jvm.java.lang.Object, 2)
    jvm.java.lang.System.arraycopy(jvm.java.util.regex.Pattern.compile("[|]").split(builder), 0, arguments, 0, 2)
    two_strings = gateway.new_array(jvm.java.lang.Class, 2)
    two_strings[0] = two_strings[1] = jvm.java.lang.Class.forName("java.lang.String")
    hash_method = jvm.org.apache.spark.util.Utils.classForName(jvm_hash.JAVA_CLASS, True, False).getMethod(
        "hash", two_strings)
    try:
        hash_method.invoke(None, arguments)
    except Exception as exc:  # py4j's error, with the Java exception's stack in its text
        return str(exc)
    return "no error"


def run_child(out: Path, no_jar: bool) -> dict:
    need_java()
    out.mkdir()
    config = out / "jvm.yaml"
    config.write_text(planted_config(out / "sources", out / "warehouse", fmt="parquet", engine="spark"))
    environ = {k: v for k, v in os.environ.items() if k != "SPARK_CONNECT_MODE_ENABLED"}
    environ.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
                   PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
    command = [sys.executable, __file__, str(out), str(config), "no-jar" if no_jar else "jar"]
    done = subprocess.run(command, cwd=out, env=environ, capture_output=True, text=True, timeout=CHILD_SECONDS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def with_jar(tmp_path_factory):
    if shutil.which("javac") is None:
        required_on_ci("javac (JDK 17) is not installed")
    out = tmp_path_factory.mktemp("jvm_hash") / "with_jar"
    return out, run_child(out, no_jar=False)


@pytest.fixture(scope="module")
def without_jar(tmp_path_factory):
    out = tmp_path_factory.mktemp("jvm_hash") / "without_jar"
    return run_child(out, no_jar=True)


def mmh3_hash(url, text) -> int:
    return mmh3.hash64(((url or "") + (text or "")).encode("utf-8"))[0]


def expected_hashes() -> dict[int, int]:
    return {i: mmh3_hash(url, text) for i, (url, text) in enumerate(edge_cases())}


def test_jvm_session_hashes_with_the_java_function(with_jar):
    _, results = with_jar
    assert jvm_hash.JAR_PREFIX in results["jars"]
    assert "laion_hash(" in results["plan"]
    assert not any(node in results["plan"] for node in PYTHON_UDF_NODES), results["plan"]
    assert results["warnings"] == []


def test_java_function_equals_mmh3_on_the_edge_cases(with_jar):
    _, results = with_jar
    assert {int(i): value for i, value in results["hashes"].items()} == expected_hashes()


@pytest.mark.skipif(not REAL_PAIRS.is_file() and not os.environ.get("CI"), reason=f"{REAL_PAIRS} not found")
def test_java_function_equals_mmh3_on_the_real_pairs(with_jar):
    out, _ = with_jar
    hashed = pq.read_table(out / "real").to_pylist()
    source = pq.read_table(REAL_PAIRS, columns=["URL", "TEXT"]).to_pylist()
    assert len(hashed) == len(source) == 10_000
    assert sorted((r["URL"], r["TEXT"]) for r in hashed) == sorted((r["URL"], r["TEXT"]) for r in source)
    wrong = [r for r in hashed if r["hash"] != mmh3_hash(r["URL"], r["TEXT"])]
    assert wrong == []
    assert len({r["hash"] for r in hashed}) > 9_900  # real numbers, not one constant


def test_java_function_refuses_a_lone_surrogate_as_python_does(with_jar):
    _, results = with_jar
    with pytest.raises(UnicodeEncodeError):
        "\ud800|a cat".encode("utf-8")
    assert "java.lang.IllegalArgumentException: laion_hash: the url has a lone surrogate U+D800 at character 0" \
        in results["lone_surrogate"], results["lone_surrogate"][:3000]


def test_a_string_column_holding_bytes_that_are_not_utf8_is_refused_naming_the_file(with_jar):
    out, results = with_jar
    refusal = results["invalid_utf8"]
    assert "read" not in refusal, f"JVM Spark read and hashed the bytes: {refusal}"
    assert INVALID_UTF8_TEXT in refusal["engine_error"]
    assert refusal["explained"] == (f"{out / 'invalid_utf8.parquet'}: {INVALID_UTF8_TEXT}, which the engine cannot "
                                    f"read (store the column as binary to quarantine those rows, or fix the file)")


def test_without_a_jar_the_jvm_session_keeps_the_pandas_udf_and_warns_once(without_jar):
    results = without_jar
    assert jvm_hash.JAR_PREFIX not in results["jars"]
    assert any(node in results["plan"] for node in PYTHON_UDF_NODES), results["plan"]
    assert {int(i): value for i, value in results["hashes"].items()} == expected_hashes()
    assert len(results["warnings"]) == 1 and "planted: javac not found" in results["warnings"][0], results["warnings"]


# --- the jar and its source, without a JVM session ------------------------------------------

def test_python_m_builds_the_jar_named_by_its_source_and_later_calls_reuse_it(tmp_path, monkeypatch):
    if shutil.which("javac") is None:
        required_on_ci("javac (JDK 17) is not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "etl.engine.jvm_hash"], capture_output=True, text=True,
                          timeout=CHILD_SECONDS)
    assert done.returncode == 0, done.stderr
    jar = Path(done.stdout.strip())
    assert jar == jvm_hash.named_by_content(tmp_path / "laion-etl", jvm_hash.JAR_NAME, jvm_hash.java_source())
    assert sorted(zipfile.ZipFile(jar).namelist()) == ["laionetl/LaionHash$Murmur3.class", "laionetl/LaionHash.class"]
    built = jar.read_bytes()
    monkeypatch.setattr(jvm_hash.shutil, "which", lambda name: pytest.fail("javac run for a cached jar"))
    assert jvm_hash.build_jar() == jar and jar.read_bytes() == built
    monkeypatch.setattr(jvm_hash, "java_source", lambda: b"// other code\n" + built)
    assert jvm_hash.jar_path() != jar  # other source, another jar


def test_without_javac_no_jar_one_warning_and_no_failure(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(jvm_hash.shutil, "which", lambda name: None)
    monkeypatch.setattr(jvm_hash, "_jar_problem", None)
    with caplog.at_level(logging.WARNING, logger=jvm_hash.log.name):
        assert jvm_hash.with_hash_jar("a.jar") == "a.jar" and jvm_hash.with_hash_jar(None) is None
    assert [r.getMessage() for r in caplog.records] == [
        "laion_hash will run in Python workers (correct, slower): no JVM jar: "
        "javac (JDK 17) not found; scripts/setup.sh --test installs it"]


def test_submit_passes_the_jar_after_the_users_own_jars(tmp_path, monkeypatch):
    from etl.cluster.submit import submit_line
    from etl.project.config import load_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(jvm_hash, "build_jar", lambda: tmp_path / "laion-hash-0123.jar")
    config = tmp_path / "jvm.yaml"
    config.write_text(planted_config(tmp_path / "sources", tmp_path / "warehouse", fmt="parquet", engine="spark")
                      .replace("spark: {shuffle_partitions: 2}", "spark: {conf: {spark.jars: /opt/mine.jar}}"))
    argv = list(submit_line(load_config(config), "build", []).argv)
    assert argv[argv.index("--jars") + 1] == f"/opt/mine.jar,{tmp_path / 'laion-hash-0123.jar'}"
    assert not any(word.startswith("spark.jars=") for word in argv)  # one list, not a --conf that --jars overrides


def test_the_java_source_ships_in_the_zip_and_the_wheel():
    assert f"etl/engine/{jvm_hash.JAVA_SOURCE}" in package_members()
    assert "etl.engine.java = *.java" in (REPO / "setup.cfg").read_text()


if __name__ == "__main__":
    child(Path(sys.argv[1]), Path(sys.argv[2]), no_jar=sys.argv[3] == "no-jar")
