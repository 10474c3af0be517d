"""Source families are data (conf/families.yaml): the bundled three, checks on a declaration, and a
fourth family added with YAML + SQL + contract only, built end to end."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_same_rows, read_delta
from etl import laion_hash
from etl.project.config import ConfigError, load_config
from etl.project.families import parse_families
from etl.project.project import load_project
from planted import WIDE_SCHEMA, expected_wide_rows, planted_config, write_planted_sources

CAPTIONS_FAMILY = """captions:
  columns:
    url: {type: string, required: true, non_empty: true}
    text: {type: string, required: true}
    caption_en: string
"""
CAPTIONS_SQL = """-- ods_laion_captions: one row per captions row (LAION-COCO style English captions).
with source as (

    select * from src_laion_captions

),

final as (

    select
        url,
        text,
        caption_en,
        laion_hash(url, text) as hash,
        file_name,
        subset
    from source

)

select * from final
"""
CAPTIONS_CONTRACT = """table: ods_laion_captions
layer: ods
grain: one row per captions row
keys: [subset, file_name, hash]
columns:
  - {name: url, type: string}
  - {name: text, type: string}
  - {name: caption_en, type: string}
  - {name: hash, type: bigint}
  - {name: file_name, type: string}
  - {name: subset, type: string}
rules:
  - {id: url_not_null, expect: ExpectColumnValuesToNotBeNull, column: url, severity: fail}
"""
CAPTIONS = [("http://a.example/1.jpg", "a cat on a mat", "A grey cat lies on a red mat."),
            ("http://c.example/3.jpg", "un chien", "A dog."),
            (None, "no url", "dropped: the url is missing")]


def test_the_bundled_families_are_laions_three():
    families = load_project().families
    assert list(families) == ["base", "joined", "aesthetic"]
    assert families["base"].required and families["joined"].required and not families["aesthetic"].required
    assert families["aesthetic"].ranked and not families["base"].ranked
    assert families["base"].swap == ("width", "height") and families["joined"].swap is None
    score = next(c for c in families["aesthetic"].columns if c.name == "aesthetic_score")
    assert score.aliases == ("aesthetic",) and score.required and score.type == "float"


@pytest.mark.parametrize("text, message", [
    ("Captions:\n  columns: {url: string}\n", "a family name is lower-case"),
    ("language:\n  columns: {url: string}\n", "not 'language'"),
    ("captions:\n  columns: {}\n", "columns: give a mapping"),
    ("captions:\n  colums: {url: string}\n", "colums: unknown key"),
    ("captions:\n  columns: {url: varchar}\n", "type must be one of string, int"),
    ("captions:\n  columns: {url: {type: string, alias: [u]}}\n", "alias: unknown key"),
    ("captions:\n  columns: {width: int}\n  swap: [width, height]\n", "swap: give two different declared columns"),
    ("captions:\n  columns: {width: int, height: double}\n  swap: [width, height]\n", "of the same type"),
    ("captions:\n  columns: {width: {type: int, non_empty: true}}\n", "non_empty applies to string columns"),
    ("captions:\n  columns: {subset: string}\n", "column subset is added by the framework"),
    ("captions:\n  ranked: yes please\n  columns: {url: string}\n", "ranked must be true or false"),
])
def test_a_family_declaration_is_checked_and_named(text, message):
    import yaml

    with pytest.raises(ConfigError, match=rf"^families\.yaml: family \w+: .*{message}"):
        parse_families(yaml.safe_load(text), "families.yaml")


def captions_project(folder: Path) -> Path:
    """A user project folder adding the captions family: YAML, its ODS SQL and its contract."""
    for sub in ("conf", "sql/ods", "expectations/ods"):
        (folder / sub).mkdir(parents=True)
    (folder / "conf/families.yaml").write_text(CAPTIONS_FAMILY)
    (folder / "sql/ods/ods_laion_captions.sql").write_text(CAPTIONS_SQL)
    (folder / "expectations/ods/ods_laion_captions.yaml").write_text(CAPTIONS_CONTRACT)
    return folder


def test_a_config_listing_an_undeclared_family_is_refused(tmp_path):
    config_path = tmp_path / "config.yaml"
    config_path.write_text("warehouse: wh\nproject_dir: mine\nsources:\n  laion2B-en:\n    base: b/*.parquet\n"
                           "    joined: j/*.parquet\n    captions: c/*.parquet\n")
    captions_project(tmp_path / "mine")
    config = load_config(config_path, environ={})
    load_project(config.project_dir).check(config)
    with pytest.raises(ConfigError, match=r"^sources\.laion2B-en\.captions: unknown key"):
        load_project().check(config)


def test_a_fourth_family_is_yaml_sql_and_contract(tmp_path, run_cli):
    sources = tmp_path / "sources"
    write_planted_sources(sources)
    # As published copies do: upper-case names and an extra index column.
    pq.write_table(pa.table({"URL": [c[0] for c in CAPTIONS], "TEXT": [c[1] for c in CAPTIONS],
                             "CAPTION_EN": [c[2] for c in CAPTIONS], "__index_level_0__": [0, 1, 2]}),
                   _mkdir(sources / "laion2B-en-captions") / "part-00000.parquet")
    config = tmp_path / "config.yaml"
    config.write_text(planted_config(sources, tmp_path / "wh").replace(
        "    aesthetic:\n", f"    captions: {sources}/laion2B-en-captions/*.parquet\n    aesthetic:\n", 1))
    project = captions_project(tmp_path / "mine")

    code, out, _ = run_cli("build", "--config", str(config), "--project-dir", str(project), "--dry-run")
    assert code == 0 and "laion.ods_laion_captions" in out and "1 captions file (3 rows)" in out
    code, out, err = run_cli("build", "--config", str(config), "--project-dir", str(project))
    assert code == 0, err

    captions = read_delta(tmp_path / "wh/ods/ods_laion_captions").to_pylist()
    assert sorted((r["url"], r["text"], r["caption_en"], r["hash"], r["file_name"], r["subset"]) for r in captions) == \
        sorted((url, text, caption, laion_hash(url, text), "part-00000.parquet", "laion2B-en")
               for url, text, caption in CAPTIONS[:2])
    quarantined = [r for r in read_delta(tmp_path / "wh/meta/quarantine").to_pylist()
                   if r["ods_table"] == "ods_laion_captions"]
    assert [(r["reason"], r["subset"]) for r in quarantined] == [("url is null", "laion2B-en")]
    # The other families and tables are built as without the new one.
    assert_same_rows(read_delta(tmp_path / "wh/dms/dms_laion_wide").select(WIDE_SCHEMA.names),
                     pa.Table.from_pylist(expected_wide_rows(sources), schema=WIDE_SCHEMA))


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def test_a_changed_family_declaration_rebuilds_its_table(tmp_path, run_cli):
    sources = tmp_path / "sources"
    write_planted_sources(sources)
    pq.write_table(pa.table({"URL": [c[0] for c in CAPTIONS], "TEXT": [c[1] for c in CAPTIONS],
                             "CAPTION_EN": [c[2] for c in CAPTIONS]}),
                   _mkdir(sources / "laion2B-en-captions") / "part-00000.parquet")
    config = tmp_path / "config.yaml"
    config.write_text(planted_config(sources, tmp_path / "wh").replace(
        "    aesthetic:\n", f"    captions: {sources}/laion2B-en-captions/*.parquet\n    aesthetic:\n", 1))
    project = captions_project(tmp_path / "mine")
    assert run_cli("build", "--config", str(config), "--project-dir", str(project))[0] == 0

    def plan_lines() -> dict[str, str]:
        code, out, err = run_cli("build", "--config", str(config), "--project-dir", str(project), "--dry-run")
        assert code == 0, err
        return {table: line for line in out.splitlines() for table in ("ods_laion_captions", "ods_laion_base")
                if f"laion.{table} " in line}

    assert all("nothing (inputs unchanged)" in line for line in plan_lines().values())
    (project / "conf/families.yaml").write_text(CAPTIONS_FAMILY.replace("caption_en: string",
                                                                        "caption_en: {type: string, aliases: [caption]}"))
    lines = plan_lines()
    assert "nothing (inputs unchanged)" not in lines["ods_laion_captions"], lines
    assert "nothing (inputs unchanged)" in lines["ods_laion_base"], lines
