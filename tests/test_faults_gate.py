"""The publish gate holds whatever breaks: a check that crashes rolls its table back like a broken
`fail` rule, and what the checks and the writer would trip over late (a `dq.rules` override of a
rule that does not exist or a threshold that is no number, a partition column the table does not
have) is refused when the config loads, before any engine starts."""

from __future__ import annotations

import json

import pytest
from deltalake import DeltaTable

from etl.project.resources import bundled_root
from helpers import assert_same_rows, one_line, read_delta, runs, table_dir, write_planted_project

RULE = "dms_laion_wide.duplicate_hash_per_subset"
COVERAGE = "dms_laion_wide.image_coverage"


def dq_rules(overrides: str) -> str:
    return f"dq:\n  rules:\n{overrides}"


@pytest.mark.parametrize("extra, key", [
    (dq_rules(f"    {RULE}: {{max_unexpected: lots}}\n"), f"dq.rules.{RULE}.max_unexpected"),
    (dq_rules(f"    {RULE}: {{max_unexpected: -1}}\n"), f"dq.rules.{RULE}.max_unexpected"),
    (dq_rules(f"    {RULE}: {{max_unexpected: 2.5}}\n"), f"dq.rules.{RULE}.max_unexpected"),
    (dq_rules(f"    {COVERAGE}: {{max_drop: a lot}}\n"), f"dq.rules.{COVERAGE}.max_drop"),
    (dq_rules(f"    {COVERAGE}: {{max_drop: -0.1}}\n"), f"dq.rules.{COVERAGE}.max_drop"),
    (dq_rules(f"    {RULE}: {{severity: error}}\n"), f"dq.rules.{RULE}.severity"),
    (dq_rules("    dms_laion_wide.duplicate_hash_per_subet: {max_unexpected: 10}\n"),
     "dq.rules.dms_laion_wide.duplicate_hash_per_subet: dms_laion_wide.yaml has no rule"),
    (dq_rules("    dms_laion_wide.schema_columns: {severity: warn}\n"), "dq.rules.dms_laion_wide.schema_columns"),
    (dq_rules("    dms_laion_wid.duplicate_hash_per_subset: {max_unexpected: 10}\n"),
     "dq.rules.dms_laion_wid.duplicate_hash_per_subset: unknown table"),
    (dq_rules(f"    {COVERAGE}: {{max_unexpected: 10}}\n"), f"dq.rules.{COVERAGE}.max_unexpected"),
    (dq_rules("    dms_laion_wide.url_not_null: {max_unexpected: 10}\n"),
     "dq.rules.dms_laion_wide.url_not_null.max_unexpected"),
    ("layers:\n  dms: {partition_by: [nosuchcol]}\n", "layers.dms.partition_by: 'nosuchcol'"),
], ids=["max_unexpected-text", "max_unexpected-negative", "max_unexpected-fraction", "max_drop-text",
        "max_drop-negative", "severity", "rule-typo", "schema-rule", "table-typo", "threshold-of-another-kind",
        "threshold-of-an-expect-rule", "partition-column"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["build", "dry-run"])
def test_a_config_the_checks_or_the_writer_would_trip_over_exits_2_before_any_engine(
        tmp_path, run_cli, no_engine, extra, key, dry_run):
    config = write_planted_project(tmp_path, extra=extra)
    code, out, err = run_cli("build", "--config", str(config), *(["--dry-run"] if dry_run else []))
    assert code == 2, err
    line = one_line(err)
    assert line.startswith(f"laion-etl: error: {key}"), line
    assert out == "" and not (tmp_path / "warehouse").exists()


def test_a_contract_partition_column_the_table_lacks_exits_2_naming_the_contract(tmp_path, run_cli, no_engine):
    bundled = bundled_root().joinpath("expectations").joinpath("ods").joinpath("ods_image_index.yaml")
    contract = tmp_path / "project/expectations/ods/ods_image_index.yaml"
    contract.parent.mkdir(parents=True)
    contract.write_text(bundled.read_text(encoding="utf-8").replace("partition_by: []", "partition_by: [shard]"))
    config = write_planted_project(tmp_path, extra=f"project_dir: {tmp_path / 'project'}\n")
    code, _, err = run_cli("build", "--config", str(config), "--dry-run")
    assert code == 2
    assert one_line(err).startswith(f"laion-etl: error: {contract}: partition_by: 'shard' is not a column")
    assert not (tmp_path / "warehouse").exists()


def test_an_override_from_the_environment_names_its_variable(tmp_path, run_cli, no_engine, monkeypatch):
    monkeypatch.setenv("LAION_ETL__LAYERS__DMS__PARTITION_BY", "nosuchcol")
    config = write_planted_project(tmp_path)
    code, _, err = run_cli("build", "--config", str(config), "--dry-run")
    assert code == 2
    line = one_line(err)
    assert line.startswith("laion-etl: error: layers.dms.partition_by: 'nosuchcol'"), line
    assert line.endswith("(set by the environment variable LAION_ETL__LAYERS__DMS__PARTITION_BY)"), line


def crashing_checks(monkeypatch, table: str, crash) -> None:
    """Make the checks of `table` crash the way `crash(df)` does; other tables are checked as usual."""
    from etl.quality.validation import Validator

    validate = Validator.validate

    def planted(self, contract, df, *args, **kwargs):
        if contract.table == table:
            crash(df)
        return validate(self, contract, df, *args, **kwargs)

    monkeypatch.setattr(Validator, "validate", planted)


def python_error(df):
    int("lots")  # what a `max_unexpected: lots` override did before overrides were checked at load


def engine_error(df):
    df.sparkSession.sql("select * from laion.no_such_table").collect()


@pytest.mark.parametrize("crash, message", [(python_error, "invalid literal for int()"),
                                            (engine_error, "no_such_table")], ids=["python", "engine"])
def test_checks_that_crash_roll_the_table_back_like_a_broken_fail_rule(tmp_path, run_cli, monkeypatch, crash, message):
    config = write_planted_project(tmp_path)
    assert run_cli("-q", "build", "--config", str(config))[0] == 0
    warehouse = tmp_path / "warehouse"
    joined, wide = table_dir(warehouse, "ods_laion_joined"), table_dir(warehouse, "dms_laion_wide")
    before, joined_version, wide_version = read_delta(joined), DeltaTable(str(joined)).version(), \
        DeltaTable(str(wide)).version()
    crashing_checks(monkeypatch, "ods_laion_joined", crash)

    code, _, err = run_cli("build", "--config", str(config), "--force")

    assert code == 1
    line = one_line(err)
    assert line.startswith(f"laion-etl: failed: ods_laion_joined ({joined}): not published, "
                           f"version {joined_version} stays current: "), line
    assert message in line
    assert DeltaTable(str(joined)).history(1)[0]["operation"] == "RESTORE"
    assert_same_rows(read_delta(joined), before)
    assert DeltaTable(str(wide)).version() == wide_version  # nothing downstream was built on it
    run = runs(warehouse)[-1]
    assert run["status"] == "failed" and json.loads(run["rolled_back"]) == {"ods_laion_joined": joined_version}
    assert "ods_laion_joined" not in json.loads(run["published"])


def test_checks_that_crash_on_a_new_table_remove_it(tmp_path, run_cli, monkeypatch):
    config = write_planted_project(tmp_path)
    crashing_checks(monkeypatch, "ods_laion_joined", python_error)

    code, _, err = run_cli("build", "--config", str(config))

    assert code == 1
    joined = table_dir(tmp_path / "warehouse", "ods_laion_joined")
    assert one_line(err).startswith(f"laion-etl: failed: ods_laion_joined ({joined}): not published, "
                                    "the new table was removed: invalid literal for int()")
    assert not joined.exists()
    run = runs(tmp_path / "warehouse")[-1]
    assert json.loads(run["rolled_back"]) == {"ods_laion_joined": None}
    assert set(json.loads(run["published"])) == {"ods_image_index", "ods_laion_aesthetic", "ods_laion_base"}
