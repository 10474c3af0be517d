"""Data quality on every rebuild: exact figures for planted faults, the publish gate, quarantine,
results as data and the report. Everything is read back independently (delta-rs, pyarrow)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from etl.engine.hashing import laion_hashes
from helpers import assert_same_rows, build_synthetic, parse, read_delta, runs, write_planted_project

SUBSETS = ("laion2B-en", "laion2B-multi", "laion1B-nolang")


def results(warehouse: Path, run_id: str | None = None) -> dict[tuple[str, str], dict]:
    """meta.dq_results of one run (the latest by default), keyed by (table, rule)."""
    rows = read_delta(warehouse / "meta/dq_results").to_pylist()
    run_id = run_id or max(r["run_id"] for r in rows)
    return {(r["table_name"], r["rule_id"]): r for r in rows if r["run_id"] == run_id}


def duplicate_figures(keys) -> tuple[int, int]:
    """(values held by more than one row, rows holding them), ignoring null keys."""
    counts = Counter(k for k in keys if k is not None and not (isinstance(k, float) and k != k))
    duplicated = {k: n for k, n in counts.items() if n > 1}
    return len(duplicated), sum(duplicated.values())


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dq")
    summary, config = build_synthetic(root, rows=4_000, seed=3)
    return root, summary, config


def test_duplicate_sample_ids_are_reported_exactly(synth_run):
    root, _, _ = synth_run
    ids = []
    for subset in SUBSETS:
        for part in sorted((root / "sources" / subset).glob("*.parquet")):
            ids += pq.read_table(part, columns=["SAMPLE_ID"]).column(0).to_pylist()
    expected_values, expected_rows = duplicate_figures([None if v is None or v != v else int(v) for v in ids])
    rule = results(root / "warehouse")[("ods_laion_base", "duplicate_sample_id")]
    details = json.loads(rule["details"])
    assert (details["duplicated_values"], details["rows_involved"]) == (expected_values, expected_rows)
    assert expected_values > 50 and rule["status"] == "warn" and rule["unexpected_count"] == expected_values
    assert len(json.loads(rule["sample"])) == 20


def test_duplicate_sample_ids_are_counted_per_subset_like_opendatalab(synth_run):
    root, _, _ = synth_run
    expected = {}
    for subset in SUBSETS:
        ids = []
        for part in sorted((root / "sources" / subset).glob("*.parquet")):
            ids += pq.read_table(part, columns=["SAMPLE_ID"]).column(0).to_pylist()
        values, rows = duplicate_figures([None if v is None or v != v else int(v) for v in ids])
        expected[subset] = {"duplicated_values": values, "rows_involved": rows}
    assert all(figures["duplicated_values"] > 0 for figures in expected.values()), expected
    found = results(root / "warehouse")
    assert json.loads(found[("ods_laion_base", "duplicate_sample_id")]["details"])["per_subset"] == expected
    wide = read_delta(root / "warehouse/dms/dms_laion_wide").select(["subset", "sample_id"]).to_pylist()
    in_wide = {subset: dict(zip(("duplicated_values", "rows_involved"),
                                duplicate_figures([r["sample_id"] for r in wide if r["subset"] == subset])))
               for subset in SUBSETS}
    details = json.loads(found[("dms_laion_wide", "duplicate_sample_id")]["details"])
    assert details["per_subset"] == in_wide
    values = details["values"]
    assert len(values) == 20 and [v["rows"] for v in values] == sorted((v["rows"] for v in values), reverse=True)


def test_duplicate_hashes_are_reported_exactly_per_subset(synth_run):
    root, summary, _ = synth_run
    keys = []
    for subset in SUBSETS:
        for part in sorted((root / "sources" / f"{subset}-joined").glob("*.parquet")):
            table = pq.read_table(part, columns=["URL", "TEXT"])
            keys += [(subset, h) for h in laion_hashes(table["URL"].to_pylist(), table["TEXT"].to_pylist()).tolist()]
    expected = duplicate_figures(keys)
    assert expected == (summary["planted"]["duplicate_hashes"], 2 * summary["planted"]["duplicate_hashes"])
    rule = results(root / "warehouse")[("dms_laion_wide", "duplicate_hash_per_subset")]
    details = json.loads(rule["details"])
    assert (details["duplicated_values"], details["rows_involved"]) == expected
    assert rule["status"] == "pass"  # under the contract's max_unexpected of 1000
    per_subset = {subset: dict(zip(("duplicated_values", "rows_involved"),
                                   duplicate_figures([k for k in keys if k[0] == subset]))) for subset in SUBSETS}
    assert details["per_subset"] == per_subset
    described = results(root / "warehouse")[("ods_laion_joined", "duplicate_hash_per_subset")]["description"]
    assert described == "subset, hash held by more than one row (none allowed)"  # its limit is 0
    counts = Counter(keys)
    assert sorted((v["subset"], v["hash"], v["rows"]) for v in details["values"]) == \
        sorted((subset, h, n) for (subset, h), n in counts.items() if n > 1)


def test_source_hash_disagreements_are_counted(synth_run):
    root, summary, _ = synth_run
    rule = results(root / "warehouse")[("ods_laion_joined", "source_hash_matches")]
    assert rule["unexpected_count"] == summary["planted"]["mismatched_source_hashes"]
    assert rule["status"] == "warn" and rule["unexpected_percent"] > 0


def test_every_result_points_at_the_table_version_the_commit_carries_the_run_id(synth_run):
    root, _, _ = synth_run
    run = runs(root / "warehouse")[-1]
    published = json.loads(run["published"])
    assert run["status"] == "succeeded" and run["verdict"] == "warn"
    for (table, _), rule in results(root / "warehouse", run["run_id"]).items():
        layer = table.split("_", 1)[0]
        delta = DeltaTable(str(root / "warehouse" / layer / table))
        assert rule["table_version"] == delta.version() == published[table]
        assert delta.history(1)[0]["userMetadata"] == run["run_id"]


PUBLISHED = {"laion2B-en": 2_322_161_808, "laion2B-multi": 2_266_202_935, "laion1B-nolang": 1_271_703_630}


def wide_figures(warehouse: Path) -> dict[str, tuple[int, int]]:
    """Subset -> (rows, joined part files holding them) of the wide table, read with delta-rs."""
    wide = read_delta(warehouse / "dms/dms_laion_wide").select(["subset", "file_name"]).to_pylist()
    return {subset: (sum(1 for r in wide if r["subset"] == subset),
                     len({r["file_name"] for r in wide if r["subset"] == subset})) for subset in SUBSETS}


def test_a_build_of_a_few_parts_reports_its_share_of_laions_totals(synth_run):
    root, _, _ = synth_run
    figures = wide_figures(root / "warehouse")
    for subset, (_, parts) in figures.items():
        assert parts == len(list((root / "sources" / f"{subset}-joined").glob("*.parquet"))) < 128
    rule = results(root / "warehouse")[("dms_laion_wide", "rows_match_published_totals")]
    details = json.loads(rule["details"])
    assert rule["status"] == "pass" and details["off"] == []
    assert details["subsets"] == [
        {"subset": subset, "expected_rows": PUBLISHED[subset], "rows": rows, "difference": rows - PUBLISHED[subset],
         "share": rows / PUBLISHED[subset], "parts_read": parts, "expected_parts": 128, "whole": False}
        for subset, (rows, parts) in sorted(figures.items())]
    total = sum(rows for rows, _ in figures.values())
    assert json.loads(rule["observed_value"]) == pytest.approx(total / 5_860_068_373)


def test_schema_and_reconciliation_rules_ran_and_passed(synth_run):
    root, _, _ = synth_run
    found = results(root / "warehouse")
    for rule_id in ("schema_columns", "schema_type_sample_id", "rows_match_joined", "aesthetic_coverage"):
        assert found[("dms_laion_wide", rule_id)]["status"] == "pass", rule_id
    assert found[("dmd_image_path_suffix_aesthetics", "one_row_per_base_row")]["status"] == "pass"


def report(run: dict):
    """The run's HTML report, parsed: read through its data-* hooks, never as text."""
    return parse(Path(run["report_path"]).read_text(encoding="utf-8")).root


def rule_row(page, table: str, rule_id: str):
    return page.find("section", cls="table-section", data_table=table).find("tr", cls="rule", data_rule_id=rule_id)


def test_report_shows_verdict_and_planted_figures(synth_run):
    root, _, _ = synth_run
    run = runs(root / "warehouse")[-1]
    html = Path(run["report_path"]).read_text(encoding="utf-8")
    assert Path(run["report_path"]).parent.joinpath("latest.html").read_text(encoding="utf-8") == html
    page = report(run)
    verdict = page.find(id="verdict")
    assert (verdict.attrs["data-verdict"], verdict.attrs["data-run-id"]) == ("warn", run["run_id"])
    found = results(root / "warehouse", run["run_id"])
    for (table, rule_id), result in found.items():
        if rule_id.startswith("schema_"):
            column = json.loads(result["details"]).get("column")
            shown = rule_row(page, table, "schema") if column is None else page.find(
                "section", cls="table-section", data_table=table).find("tr", cls="schema-column", data_column=column)
            assert shown.attrs["data-status"] == result["status"] == "pass", (table, rule_id)
            continue
        row = rule_row(page, table, rule_id)
        unexpected = None if result["unexpected_count"] is None else str(result["unexpected_count"])
        assert (row.attrs["data-status"], row.attrs.get("data-unexpected")) == (result["status"], unexpected), \
            (table, rule_id)
    for table in {table for table, _ in found}:
        section = page.find("section", cls="table-section", data_table=table)
        assert [r.attrs["data-rule-id"] for r in section.find_all("tr", cls="rule")].count("schema") == 1
        assert "open" not in section.find("details", cls="schema").attrs
        checked = [tr.attrs["data-column"] for tr in section.find_all("tr", cls="schema-column")]
        assert checked == [c for t, c in ((t, r[len("schema_type_"):]) for t, r in found if r.startswith("schema_type_"))
                           if t == table]
    details = json.loads(found[("ods_laion_base", "duplicate_sample_id")]["details"])
    extra = page.find("section", data_table="ods_laion_base").find(
        "tr", cls="rule-extra", data_rule_id="duplicate_sample_id")
    figures = extra.find("p", cls="dup-figures")
    assert (figures.attrs["data-duplicated-values"], figures.attrs["data-rows-involved"]) == \
        (str(details["duplicated_values"]), str(details["rows_involved"]))
    per_subset = {tr.attrs["data-subset"]: {"duplicated_values": int(tr.attrs["data-duplicated-values"]),
                                            "rows_involved": int(tr.attrs["data-rows-involved"])}
                  for tr in extra.find("table", cls="dup-subsets").find_all("tr") if "data-subset" in tr.attrs}
    assert per_subset == details["per_subset"] and set(per_subset) == set(SUBSETS)
    wide = page.find("section", cls="table-section", data_table="dms_laion_wide")
    wide_rows = read_delta(root / "warehouse/dms/dms_laion_wide").num_rows
    assert wide.find("dd", cls="rows").attrs["data-rows"] == str(wide_rows)
    plots = wide.find_all("figure", cls="plot histogram")
    assert [f.attrs["data-column"] for f in plots] == ["aesthetic_score", "punsafe", "pwatermark", "similarity"]
    assert all(f.find("svg") for f in plots)


def test_dq_command_validates_without_rebuilding(synth_run, run_cli):
    root, _, config = synth_run
    version = DeltaTable(str(root / "warehouse/dms/dms_laion_wide")).version()
    code, out, _ = run_cli("dq", "--config", str(config), "--tables", "dms_laion_wide")
    assert code == 0 and "verdict: WARN" in out and "duplicate_sample_id" in out
    assert DeltaTable(str(root / "warehouse/dms/dms_laion_wide")).version() == version
    assert runs(root / "warehouse")[-1]["status"] == "succeeded"
    page = report(runs(root / "warehouse")[-1])  # says validated, never published: a dq run publishes nothing
    assert page.find(id="verdict").attrs["data-command"] == "dq"
    assert page.find("section", data_table="dms_laion_wide").find_all(cls="validated") and not page.find_all(cls="published")
    code, _, err = run_cli("dq", "--config", str(config), "--tables", "nope")
    assert code == 2 and "--tables: unknown table 'nope'" in err


def test_completeness_judges_a_whole_build_and_reports_a_partial_one(synth_run, run_cli, monkeypatch):
    root, _, config = synth_run
    figures = wide_figures(root / "warehouse")

    def dq_with(totals: dict[str, tuple[int, int]]) -> tuple[int, dict, object]:
        for subset, (rows, parts) in totals.items():
            monkeypatch.setenv(f"LAION_ETL__SOURCES__{subset}__EXPECTED_ROWS", str(rows))
            monkeypatch.setenv(f"LAION_ETL__SOURCES__{subset}__EXPECTED_PARTS", str(parts))
        code = run_cli("dq", "--config", str(config), "--tables", "dms_laion_wide")[0]
        run = runs(root / "warehouse")[-1]
        return code, results(root / "warehouse", run["run_id"])[("dms_laion_wide", "rows_match_published_totals")], run

    en, multi, nolang = (figures[s] for s in ("laion2B-en", "laion2B-multi", "laion1B-nolang"))
    code, rule, _ = dq_with({"laion2B-en": en, "laion2B-multi": multi, "laion1B-nolang": nolang})
    assert (code, rule["status"], json.loads(rule["details"])["off"]) == (0, "pass", [])

    # laion2B-multi is whole but 7 rows short of its planted total; laion1B-nolang misses 3 of its parts.
    code, rule, run = dq_with({"laion2B-multi": (multi[0] + 7, multi[1]), "laion1B-nolang": (4 * nolang[0], nolang[1] + 3)})
    details = json.loads(rule["details"])
    assert (code, rule["status"], rule["severity"], details["off"]) == (0, "warn", "warn", ["laion2B-multi"])
    by_subset = {item["subset"]: item for item in details["subsets"]}
    assert by_subset["laion2B-en"] == {"subset": "laion2B-en", "expected_rows": en[0], "rows": en[0], "difference": 0,
                                       "share": 1.0, "parts_read": en[1], "expected_parts": en[1], "whole": True}
    assert (by_subset["laion2B-multi"]["difference"], by_subset["laion2B-multi"]["whole"]) == (-7, True)
    assert by_subset["laion1B-nolang"] == {
        "subset": "laion1B-nolang", "expected_rows": 4 * nolang[0], "rows": nolang[0], "difference": -3 * nolang[0],
        "share": 0.25, "parts_read": nolang[1], "expected_parts": nolang[1] + 3, "whole": False}
    rows = {tr.attrs["data-subset"]: tr for tr in report(run).find("table", cls="completeness").find_all(
        "tr", cls="completeness-subset")}
    assert {subset: (tr.attrs["data-rows"], tr.attrs["data-difference"], tr.attrs["data-whole"])
            for subset, tr in rows.items()} == {s: (str(i["rows"]), str(i["difference"]), str(i["whole"]).lower())
                                                for s, i in by_subset.items()}


def test_broken_fail_rule_keeps_previous_version_and_stops_downstream(tmp_path, run_cli):
    config = write_planted_project(tmp_path)
    assert run_cli("build", "--config", str(config))[0] == 0
    joined_path, wide_path = tmp_path / "warehouse/ods/ods_laion_joined", tmp_path / "warehouse/dms/dms_laion_wide"
    before, joined_version, wide_version = read_delta(joined_path), DeltaTable(str(joined_path)).version(), \
        DeltaTable(str(wide_path)).version()
    bad = pq.read_table(tmp_path / "sources/laion2B-en-joined/part-00000.parquet").slice(0, 1)
    bad = bad.set_column(bad.schema.get_field_index("punsafe"), "punsafe", pa.array([1.5], pa.float32()))
    pq.write_table(bad, tmp_path / "sources/laion2B-en-joined/part-00001.parquet")

    code, out, err = run_cli("build", "--config", str(config))

    assert code == 1
    assert err.strip().splitlines() == [err.strip().splitlines()[-1]]
    assert "ods_laion_joined: rule punsafe_in_unit_range broke" in err and f"version {joined_version} stays current" in err
    assert "verdict: FAIL" in out
    assert_same_rows(read_delta(joined_path), before)
    assert DeltaTable(str(joined_path)).history(1)[0]["operation"] == "RESTORE"
    assert DeltaTable(str(wide_path)).version() == wide_version
    run = runs(tmp_path / "warehouse")[-1]
    assert run["status"] == "failed" and json.loads(run["rolled_back"]) == {"ods_laion_joined": joined_version}
    page = report(run)
    assert page.find(id="verdict").attrs["data-verdict"] == "fail"
    broken = rule_row(page, "ods_laion_joined", "punsafe_in_unit_range")
    assert (broken.attrs["data-status"], broken.attrs["data-unexpected"]) == ("fail", "1")


def test_configured_duplicate_threshold_blocks_a_first_publish(tmp_path, run_cli):
    override = "dq:\n  rules:\n    ods_laion_base.duplicate_hash_per_subset: {severity: fail, max_unexpected: 0}\n"
    config = write_planted_project(tmp_path, extra=override)
    code, _, err = run_cli("build", "--config", str(config))
    assert code == 1 and "ods_laion_base: rule duplicate_hash_per_subset broke" in err
    assert "the new table was removed" in err
    assert not DeltaTable.is_deltatable(str(tmp_path / "warehouse/ods/ods_laion_base"))
    assert not (tmp_path / "warehouse/dms").exists()


def test_completeness_blocks_when_configured_to_fail(tmp_path, run_cli, monkeypatch):
    override = "dq:\n  rules:\n    dms_laion_wide.rows_match_published_totals: {severity: fail}\n"
    config = write_planted_project(tmp_path, extra=override)
    parts = sorted((tmp_path / "sources/laion2B-en-joined").glob("*.parquet"))
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    monkeypatch.setenv("LAION_ETL__SOURCES__LAION2B-EN__EXPECTED_ROWS", str(rows + 1))
    monkeypatch.setenv("LAION_ETL__SOURCES__LAION2B-EN__EXPECTED_PARTS", str(len(parts)))

    code, _, err = run_cli("build", "--config", str(config))

    assert code == 1 and "dms_laion_wide: rule rows_match_published_totals broke" in err
    rule = results(tmp_path / "warehouse")[("dms_laion_wide", "rows_match_published_totals")]
    subsets = {item["subset"]: item for item in json.loads(rule["details"])["subsets"]}
    assert (rule["status"], subsets["laion2B-en"]["rows"], subsets["laion2B-en"]["difference"]) == ("fail", rows, -1)
    assert subsets["laion1B-nolang"]["whole"] is False  # its 128 published parts: a share, not a failure


def _write_bad_base_files(sources: Path) -> None:
    good = ("http://h.example/9.jpg", "kept")
    pq.write_table(pa.table({
        "SAMPLE_ID": [20, 21, 22, 23], "URL": [None, "  ", "http://w.example/x.jpg", good[0]],
        "TEXT": ["no url", "blank url", "bad width", good[1]], "HEIGHT": ["5", "5", "5", "7"],
        "WIDTH": ["1", "2", "abc", "8"], "LICENSE": ["?"] * 4, "NSFW": ["UNLIKELY"] * 4,
        "similarity": [0.3] * 4}), sources / "laion2B-en/part-00002.parquet")
    pq.write_table(pa.table({"SAMPLE_ID": [30, 31], "LINK": ["http://r.example/1", "http://r.example/2"],
                             "TEXT": ["renamed", "renamed"]}), sources / "laion2B-en/part-00003.parquet")


def test_rejected_rows_are_quarantined_with_reasons_and_counts_add_up(tmp_path, run_cli):
    config = write_planted_project(tmp_path)
    _write_bad_base_files(tmp_path / "sources")

    assert run_cli("build", "--config", str(config))[0] == 0

    quarantine = read_delta(tmp_path / "warehouse/meta/quarantine").to_pylist()
    reasons = Counter((r["file_name"], r["reason"]) for r in quarantine if r["ods_table"] == "ods_laion_base")
    assert reasons == {("part-00002.parquet", "url is null"): 1, ("part-00002.parquet", "url is empty"): 1,
                       ("part-00002.parquet", "width is not a valid int"): 1,
                       ("part-00003.parquet", "file lacks required column url"): 2}
    width_row = [r for r in quarantine if r["reason"] == "width is not a valid int"][0]
    assert json.loads(width_row["original_values"])["WIDTH"] == "abc"
    assert width_row["source_path"].endswith("laion2B-en/part-00002.parquet")
    read_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (tmp_path / "sources").glob("laion*/part-*.parquet")
                    if p.parent.name in ("laion2B-en", "laion1B-nolang"))
    base = read_delta(tmp_path / "warehouse/ods/ods_laion_base")
    assert read_rows == base.num_rows + len(quarantine) == 12
    kept = [r for r in base.to_pylist() if r["url"] == "http://h.example/9.jpg"][0]
    assert (kept["width"], kept["height"]) == (7, 8)  # strings cast, then swapped back like every base row

    assert run_cli("build", "--config", str(config), "--force")[0] == 0
    assert len(read_delta(tmp_path / "warehouse/meta/quarantine")) == len(quarantine)
    run = runs(tmp_path / "warehouse")[-1]
    assert run["quarantined_rows"] == 5
    shown = [row.attrs for row in report(run).find(id="quarantine").find_all("tr") if "data-reason" in row.attrs]
    assert {row["data-reason"]: row["data-rows"] for row in shown} == {
        "url is null": "1", "url is empty": "1", "width is not a valid int": "1", "file lacks required column url": "2"}


def test_a_sharp_drop_in_image_coverage_warns(tmp_path, run_cli):
    config = write_planted_project(tmp_path)
    assert run_cli("build", "--config", str(config))[0] == 0
    first = results(tmp_path / "warehouse")[("dms_laion_wide", "image_coverage")]
    assert first["status"] == "pass" and json.loads(first["observed_value"]) == pytest.approx(2 / 6)
    config.write_text(config.read_text().split("images:")[0] + "images: []\n")

    code, out, _ = run_cli("build", "--config", str(config))

    assert code == 0 and "verdict: WARN" in out
    second = results(tmp_path / "warehouse")[("dms_laion_wide", "image_coverage")]
    assert second["status"] == "warn" and json.loads(second["observed_value"]) == 0
    assert json.loads(second["details"])["previous"] == pytest.approx(2 / 6)
