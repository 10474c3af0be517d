"""`laion-etl submit` on a real Spark standalone cluster (a master and two one-core workers, each
its own JVM, tests/standalone_cluster.py): a build submitted to it gives the tables Sail gives,
read back with delta-rs; the executors run the hash in Python workers of a separate virtualenv
that does not have the package, so they can only import it from the zip that submit ships, and
they record that they did. Also: the line `--print` gives, exit codes passed through, bad configs
refused before any JVM starts, config files named in the docs exist.

dq and export submitted to a standalone cluster are the README's cluster recipe, which
tests/test_readme.py runs verbatim and checks against the Sail-built demo: not done twice here.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

import etl.cluster.submit
from etl.cli import main
from etl.cluster.submit import job_script
from etl.engine.artifacts import spark_home
from etl.engine.jvm_packages import jvm_packages
from etl.engine.session import (DELTA_SESSION_SETTINGS, DRIVER_JAVA_OPTIONS, PYSPARK_CLIENT_SETTINGS, QUIET_LOG_CONFIG,
                                QUIET_SESSION_SETTINGS)
from etl.project.config import load_config
from etl.project.project import load_project
from helpers import (REPO, assert_same_rows, need_java, one_line, read_delta, run_in_own_group, runs,
                     write_planted_config, write_planted_project)
from planted import WIDE_SCHEMA, planted_config
from standalone_cluster import StandaloneCluster, cluster_environment
from test_packaging import fresh_venv

# The first cluster test pays for the cluster, the executors' virtualenv and two builds (about 4
# minutes on 2 busy cores): more than setup.cfg's per-test deadline allows on a slow CI machine.
pytestmark = pytest.mark.timeout(900)
# Tiny tables: no waiting for a task's preferred executor (Delta's log is read in 2 tasks by default).
CLUSTER_SPARK = ("spark: {shuffle_partitions: 2, conf: {spark.ui.enabled: 'false', spark.executor.memory: 512m, "
                 "spark.ui.showConsoleProgress: 'false', spark.locality.wait: 0s}}")

# Installed into the executors' virtualenv as a .pth-started module: every Python worker that
# imports `etl` writes down which interpreter it is, where `etl` came from and its folder.
IMPORT_PROBE = '''\
import importlib.machinery, json, os, sys

class RecordEtlImport:
    def find_spec(self, name, path=None, target=None):
        if name != "etl":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        with open(os.path.join({records!r}, str(os.getpid())), "a") as out:
            out.write(json.dumps({{"python": sys.executable, "origin": spec and spec.origin,
                                  "cwd": os.getcwd()}}) + "\\n")
        return spec

sys.meta_path.insert(0, RecordEtlImport())
'''


def submit_command(*args: str, env: dict, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`laion-etl submit ARGS` as a user runs it, from a shell whose PATH lacks the virtualenv
    (spark-submit's wrapper must not need it); on a timeout its whole process group is killed."""
    return run_in_own_group([sys.executable, "-m", "etl.cli", "submit", *args], cwd=cwd, env=env, timeout=timeout,
                            what=f"laion-etl submit {' '.join(args)}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    need_java()
    with StandaloneCluster(tmp_path_factory.mktemp("standalone"), workers=2, cores=1, memory="1g") as running:
        yield running


@pytest.fixture(scope="module")
def shipped_python(cluster) -> SimpleNamespace:
    """A fresh virtualenv on the cluster's machines for the executors: the dependencies, not the
    package, and the import probe. (In the cluster's folder: its Python workers count as the cluster's.)"""
    root = cluster.root / "executor_env"
    python = fresh_venv(root / "venv")
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    missing = subprocess.run([str(python), "-c", "import etl"], cwd=root, capture_output=True, text=True,
                             env=cluster_environment())
    assert missing.returncode != 0 and "No module named 'etl'" in missing.stderr, "the venv must lack the package"
    records = root / "etl_imports"
    records.mkdir()
    (purelib / "etl_import_probe.py").write_text(IMPORT_PROBE.format(records=str(records)))
    (purelib / "etl_import_probe.pth").write_text("import etl_import_probe\n")
    return SimpleNamespace(python=python, records=records)


@pytest.fixture(scope="module")
def submitting(cluster, shipped_python, tmp_path_factory):
    """`.run(ARGS)`: `laion-etl submit --master <cluster> --executor-python <shipped> -- ARGS` from an
    empty folder; `.cache`: where submit writes the zip it ships."""
    root = tmp_path_factory.mktemp("submitter")
    env = cluster_environment({"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(root / "cache")})
    env.pop("SPARK_HOME")

    def run(*job_args: str) -> subprocess.CompletedProcess:
        return submit_command("--master", cluster.master_url, "--executor-python", str(shipped_python.python),
                              "--", *job_args, env=env, cwd=root)

    return SimpleNamespace(run=run, cache=root / "cache")


@pytest.fixture(scope="module")
def planted_on_both(tmp_path_factory, submitting) -> SimpleNamespace:
    """The planted sources built on the cluster (engine spark, Delta) and by Sail."""
    root = tmp_path_factory.mktemp("planted")
    write_planted_project(root, root / "sail_warehouse", name="sail")
    cluster_config = root / "cluster.yaml"
    cluster_config.write_text(planted_config(root / "sources", root / "cluster_warehouse", engine="spark")
                              .replace("spark: {shuffle_partitions: 2}", CLUSTER_SPARK))
    built = submitting.run("build", "--config", str(cluster_config))
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-3000:]
    assert main(["build", "--config", str(root / "sail.yaml")]) == 0
    return SimpleNamespace(root=root, config=cluster_config, built=built)


@pytest.mark.jvm
@pytest.mark.parametrize("table", load_project().tables, ids=lambda t: t.name)
def test_the_cluster_builds_the_rows_sail_builds(planted_on_both, table):
    root = planted_on_both.root
    on_cluster = read_delta(root / "cluster_warehouse" / table.layer / table.name)
    on_sail = read_delta(root / "sail_warehouse" / table.layer / table.name)
    assert on_sail.num_rows > 0
    # Names and types: Sail marks the columns it fills from literals (subset, file_name) not null.
    assert [(f.name, f.type) for f in on_cluster.schema] == [(f.name, f.type) for f in on_sail.schema]
    assert_same_rows(on_cluster, on_sail)
    if table.name == "dms_laion_wide":
        assert on_cluster.schema == WIDE_SCHEMA


@pytest.mark.jvm
def test_the_build_ran_on_both_workers_of_the_cluster(planted_on_both, cluster):
    assert "6 tables built" in planted_on_both.built.stdout
    recorded = runs(planted_on_both.root / "cluster_warehouse")
    assert [(r["command"], r["engine"], r["verdict"]) for r in recorded] == [("build", "spark", "warn")]
    assert Path(recorded[0]["report_path"]).is_file()
    # The driver submit starts reads the package's log4j2 configuration: warnings only, from the
    # JVM's first line; what is left is the build's own lines, the summary and Ivy's resolution.
    lines = [line for line in (planted_on_both.built.stdout + planted_on_both.built.stderr).splitlines()
             if " ... still running (" not in line]  # the heartbeats count the machine's speed
    assert len(lines) < 100 and not [line for line in lines if " INFO " in line], "\n".join(lines[:150])
    state = cluster.state()
    assert state["aliveworkers"] == 2
    apps = state["completedapps"]
    assert [app["state"] for app in apps] == ["FINISHED"] * len(apps) and apps
    # Each application's executors, as the workers saw them: one folder per executor per worker.
    build_app = min(apps, key=lambda app: app["starttime"])["id"]
    assert all((cluster.worker_dir(n) / build_app).is_dir() for n in (1, 2)), build_app


@pytest.mark.jvm
def test_executors_import_the_package_from_the_shipped_zip(planted_on_both, shipped_python, cluster, submitting):
    records = [json.loads(line) for path in shipped_python.records.iterdir() for line in path.read_text().splitlines()]
    assert records, "no executor Python worker imported etl"
    assert {r["python"] for r in records} == {str(shipped_python.python)}
    workers = set()
    for record in records:
        # The executor's own copy of the zip in its folder on the worker, <worker dir>/<app>/<executor>/,
        # byte for byte the zip submit wrote: etl-<digest>.zip/etl/__init__.py (relative to that folder).
        executor_dir, origin = Path(record["cwd"]), Path(record["origin"])
        shipped = executor_dir / origin.parts[0]
        assert origin.parts[1:] == ("etl", "__init__.py") and re.fullmatch(r"etl-[0-9a-f]{16}\.zip", shipped.name)
        assert shipped.read_bytes() == (submitting.cache / "laion-etl" / shipped.name).read_bytes()
        worker = executor_dir.parents[1]
        assert worker in (cluster.worker_dir(1), cluster.worker_dir(2)), executor_dir
        assert not executor_dir.is_relative_to(REPO)
        workers.add(worker)
    print(f"{len(records)} Python workers imported etl from the shipped zip on {len(workers)} worker(s)")


@pytest.mark.jvm
def test_the_job_exit_code_passes_through_submit(submitting, tmp_path):
    write_planted_project(tmp_path, engine="spark", name="cluster")
    for part in (tmp_path / "sources" / "laion1B-nolang").iterdir():
        part.unlink()  # a glob matching nothing: the job's planning refuses it (exit code 2)
    result = submitting.run("build", "--config", str(tmp_path / "cluster.yaml"))
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    # spark-submit ran (it resolved the Delta package) and the job said why it stopped:
    # spark-submit's PythonRunner merges the job's stderr into its stdout.
    assert "io.delta#delta-spark_2.13" in result.stderr
    assert re.search(r"laion-etl: error: .*laion1B-nolang.*base", result.stdout), result.stdout[-3000:]


# --- without a cluster: the line, and what is refused before spark-submit starts


def printed_line(run_cli, *args: str) -> tuple[dict, list[str]]:
    """`laion-etl submit --print ARGS` as (environment, argv)."""
    code, out, err = run_cli("submit", "--print", *args)
    assert code == 0, err
    assert all(line.endswith(" \\") for line in out.strip().splitlines()[:-1])
    words = shlex.split(out.replace(" \\\n", " "))
    environment = {}
    while "=" in words[0] and not words[0].startswith("/"):
        name, value = words.pop(0).split("=", 1)
        environment[name] = value
    return environment, words


def options(argv: list[str]) -> tuple[dict, list[str], list[str]]:
    """spark-submit's options (but --conf), its --conf entries, and the job with its arguments."""
    found, conf, rest = {}, [], argv[1:]
    while rest[0].startswith("--"):
        option, value = rest.pop(0), rest.pop(0)
        if option == "--conf":
            conf.append(value)
        else:
            found[option] = value
    return found, conf, rest


def test_print_gives_the_spark_submit_line_for_conf_cluster_yaml(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config_path = REPO / "conf" / "cluster.yaml"
    config = load_config(config_path)
    assert (config.engine, config.format) == ("spark", "delta") and config.spark.conf
    environment, argv = printed_line(run_cli, "--", "build", "--config", str(config_path), "--layers", "ods,dmd")
    assert environment == {"SPARK_HOME": str(spark_home())}
    assert argv[0] == str(spark_home() / "bin" / "spark-submit")
    found, conf, job = options(argv)
    assert found["--master"] == config.spark.master == "spark://127.0.0.1:7077"
    assert found["--deploy-mode"] == "client"
    assert found["--packages"] == ",".join(jvm_packages("delta", False))
    quiet_driver = f"-Dlog4j2.configurationFile={REPO / 'etl' / 'engine' / QUIET_LOG_CONFIG}"
    expected_conf = {**DELTA_SESSION_SETTINGS, **QUIET_SESSION_SETTINGS, **PYSPARK_CLIENT_SETTINGS,
                     DRIVER_JAVA_OPTIONS: quiet_driver,
                     "spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable,
                     **config.spark.conf}
    assert dict(entry.split("=", 1) for entry in conf) == expected_conf and len(conf) == len(expected_conf)
    assert job == [str(REPO / "jobs" / "build.py"), "--config", str(config_path), "--layers", "ods,dmd"]
    shipped = Path(found["--py-files"])
    assert shipped.parent == tmp_path / "cache" / "laion-etl"
    names = zipfile.ZipFile(shipped).namelist()
    assert "etl/cli.py" in names and "etl/_project/sql/dms/dms_laion_wide.sql" in names
    # The same code gives the same zip: a second line names the same file.
    assert options(printed_line(run_cli, "--", "dq", "--config", str(config_path))[1])[0]["--py-files"] == str(shipped)


def test_print_takes_the_options_over_the_config(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = write_planted_config(tmp_path, engine="spark", fmt="parquet", extra="")
    config.write_text(config.read_text().replace(
        "spark: {shuffle_partitions: 2}",
        "spark: {master: 'local[3]', conf: {spark.pyspark.python: ./laion-env/bin/python, "
        "spark.archives: 'laion-env.tar.gz#laion-env', spark.driver.extraJavaOptions: -Dmine=1}}"))
    _, argv = printed_line(run_cli, "--", "export", "--config", str(config), "--preset", "sd2", "--out", "x y")
    found, conf, job = options(argv)
    assert found["--master"] == "local[3]" and "--packages" not in found  # parquet on local paths: no jars
    assert "spark.pyspark.python=./laion-env/bin/python" in conf and "spark.archives=laion-env.tar.gz#laion-env" in conf
    assert f"spark.pyspark.driver.python={sys.executable}" in conf  # client mode: the driver runs here
    quiet_driver = f"-Dlog4j2.configurationFile={REPO / 'etl' / 'engine' / QUIET_LOG_CONFIG}"
    assert f"{DRIVER_JAVA_OPTIONS}={quiet_driver} -Dmine=1" in conf  # the user's options after ours: theirs win
    assert not any(entry.startswith("spark.sql.extensions=") for entry in conf)
    assert job[1:] == ["--config", str(config), "--preset", "sd2", "--out", "x y"]
    _, argv = printed_line(run_cli, "--master", "yarn", "--deploy-mode", "cluster", "--executor-python",
                           "./other/bin/python", "--", "build", "--config", str(config))
    found, conf, _ = options(argv)
    assert (found["--master"], found["--deploy-mode"]) == ("yarn", "cluster")
    assert "spark.pyspark.python=./other/bin/python" in conf
    assert "spark.pyspark.driver.python=./other/bin/python" in conf  # cluster mode: the driver runs there
    assert f"{DRIVER_JAVA_OPTIONS}=-Dmine=1" in conf  # cluster mode: no file of ours there


def test_submit_refuses_bad_arguments_before_spark_submit_starts(run_cli, tmp_path, monkeypatch, capsys):
    def refuse(line):
        raise AssertionError(f"spark-submit was started: {line}")

    monkeypatch.setattr(etl.cluster.submit, "run", refuse)
    code, _, err = run_cli("submit", "--", "build", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and one_line(err) == f"laion-etl: error: config file not found: {tmp_path / 'missing.yaml'}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: spark\nformat: delta\nwarehouse: /tmp/x\nsources: {}\n")
    code, _, err = run_cli("submit", "--", "dq", "--config", str(bad))
    assert code == 2 and one_line(err) == "laion-etl: error: sources: at least one subset is required"
    for job_args in (["build"], ["export", "--config", str(bad), "--preset", "sd2"], ["sql", "--config", str(bad)]):
        with pytest.raises(SystemExit) as refused:
            main(["submit", "--", *job_args])
        assert refused.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_the_job_script_of_a_zip_install_is_written_to_the_cache(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert run_cli("package-zip", "--out", str(tmp_path / "etl.zip"))[0] == 0
    bundled = zipfile.Path(tmp_path / "etl.zip", "etl/_project/")
    script = job_script("export", root=bundled)
    assert script.parent == tmp_path / "cache" / "laion-etl" / "jobs" and script.suffix == ".py"
    assert script.read_bytes() == (REPO / "jobs" / "export.py").read_bytes()
    assert job_script("build") == REPO / "jobs" / "build.py"  # a checkout's own
