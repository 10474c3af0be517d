"""The configuration schema: loading, path resolution, `LAION_ETL__*` overrides, and errors that name the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from etl.project.config import ConfigError, load_config
from etl.project.project import load_project

VALID = """
engine: sail
format: delta
warehouse: warehouse
spark:
  master: local[2]
  shuffle_partitions: 3
sources:
  laion2B-en:
    base: src/laion2B-en/*.parquet
    joined: src/laion2B-en-joined/*.parquet
    aesthetic:
      - src/laion2B-en-aesthetic/*.parquet
      - s3://laion/improved_aesthetics_4.5plus/*.parquet
      - /abs/third/*.parquet
  laion1B-nolang:
    base: [src/laion1B-nolang/*.parquet]
    joined: [s3://laion/laion1B-nolang-joined/*.parquet]
  laion2B-multi:
    language: multi
    base: src/laion2B-multi/*.parquet
    joined: src/laion2B-multi-joined/*.parquet
images:
  - images
  - s3://bucket/img2dataset/run1/
"""

# The smallest valid config: every error case below starts from it and breaks one thing.
MINIMAL = """
warehouse: wh
sources:
  laion2B-en:
    base: b/*.parquet
    joined: j/*.parquet
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict | None = None, **kwargs):
    return load_config(write(tmp_path, text), environ={} if environ is None else environ, **kwargs)


# --- a valid config ---------------------------------------------------------------------------


def test_valid_config_loads_with_its_values(tmp_path):
    config = load(tmp_path, VALID)
    assert config.engine == "sail"
    assert config.format == "delta"
    assert config.spark.master == "local[2]"
    assert config.spark.shuffle_partitions == 3
    assert config.subset_names == ("laion2B-en", "laion1B-nolang", "laion2B-multi")
    assert config.connect_url is None and config.s3_endpoint is None
    assert config.layers == {}  # the project's layer defaults apply
    assert config.project_dir is None


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf" / "nested"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(write(conf_dir, VALID), environ={})
    folder = conf_dir.resolve()
    assert config.warehouse == str(folder / "warehouse")
    en = config.sources[0]
    assert en.globs("base") == (str(folder / "src/laion2B-en/*.parquet"),)
    assert en.globs("joined") == (str(folder / "src/laion2B-en-joined/*.parquet"),)
    assert config.images[0] == str(folder / "images")
    assert config.table_path("dms", "dms_laion_wide") == str(folder / "warehouse" / "dms" / "dms_laion_wide")


def test_relative_parent_paths_resolve_like_the_demo_config(tmp_path):
    config = load(tmp_path / "conf", MINIMAL.replace("warehouse: wh", "warehouse: ../data/wh"))
    assert config.warehouse == str((tmp_path / "data" / "wh").resolve())


def test_s3_and_absolute_paths_are_kept_as_they_are(tmp_path):
    config = load(tmp_path, VALID)
    en, nolang, _ = config.sources
    assert en.globs("aesthetic")[1] == "s3://laion/improved_aesthetics_4.5plus/*.parquet"
    assert en.globs("aesthetic")[2] == "/abs/third/*.parquet"
    assert nolang.globs("joined") == ("s3://laion/laion1B-nolang-joined/*.parquet",)
    assert config.images[1] == "s3://bucket/img2dataset/run1/"
    s3_warehouse = load(tmp_path, MINIMAL.replace("warehouse: wh", "warehouse: s3://bucket/warehouse"))
    assert s3_warehouse.warehouse == "s3://bucket/warehouse"
    assert s3_warehouse.table_path("ods", "ods_laion_base") == "s3://bucket/warehouse/ods/ods_laion_base"


def test_subset_default_languages_and_explicit_language_wins(tmp_path):
    config = load(tmp_path, VALID)
    languages = {s.name: s.language for s in config.sources}
    assert languages == {"laion2B-en": "en", "laion1B-nolang": "nolang", "laion2B-multi": "multi"}
    explicit = load(tmp_path, MINIMAL + "    language: de\n")
    assert explicit.sources[0].language == "de"
    unknown_subset = load(tmp_path, MINIMAL.replace("laion2B-en:", "my-subset:"))
    assert unknown_subset.sources[0].language is None


def test_subsets_expect_laions_published_totals_unless_configured(tmp_path):
    config = load(tmp_path, VALID)
    totals = {s.name: (s.expected_rows, s.expected_parts) for s in config.sources}
    assert totals == {"laion2B-en": (2_322_161_808, 128), "laion2B-multi": (2_266_202_935, 128),
                      "laion1B-nolang": (1_271_703_630, 128)}
    assert sum(rows for rows, _ in totals.values()) == 5_860_068_373
    planted = load(tmp_path, MINIMAL + "    expected_rows: 7\n    expected_parts: 2\n")
    assert (planted.sources[0].expected_rows, planted.sources[0].expected_parts) == (7, 2)
    assert set(planted.sources[0].families) == {"base", "joined"}, "the totals are not source families"
    load_project().check(planted)
    own = load(tmp_path, MINIMAL.replace("laion2B-en:", "my-subset:"))
    assert (own.sources[0].expected_rows, own.sources[0].expected_parts) == (None, None)
    unset = load(tmp_path, MINIMAL + "    expected_rows: null\n")
    assert (unset.sources[0].expected_rows, unset.sources[0].expected_parts) == (None, 128)
    from_env = load(tmp_path, MINIMAL, environ={"LAION_ETL__SOURCES__LAION2B-EN__EXPECTED_ROWS": "12"})
    assert from_env.sources[0].expected_rows == 12


def test_aesthetic_sources_keep_their_priority_order(tmp_path):
    config = load(tmp_path, VALID)
    folder = tmp_path.resolve()
    assert config.sources[0].globs("aesthetic") == (
        str(folder / "src/laion2B-en-aesthetic/*.parquet"),
        "s3://laion/improved_aesthetics_4.5plus/*.parquet",
        "/abs/third/*.parquet",
    )
    reversed_order = VALID.replace(
        "      - src/laion2B-en-aesthetic/*.parquet\n      - s3://laion/improved_aesthetics_4.5plus/*.parquet\n",
        "      - s3://laion/improved_aesthetics_4.5plus/*.parquet\n      - src/laion2B-en-aesthetic/*.parquet\n")
    assert reversed_order != VALID
    assert load(tmp_path, reversed_order).sources[0].globs("aesthetic")[:2] == (
        "s3://laion/improved_aesthetics_4.5plus/*.parquet", str(folder / "src/laion2B-en-aesthetic/*.parquet"))
    assert config.sources[1].globs("aesthetic") == ()


def test_images_and_optional_sections_may_be_left_out(tmp_path):
    config = load(tmp_path, MINIMAL)
    assert config.images == ()
    assert config.engine == "sail" and config.format == "delta"
    assert config.spark.shuffle_partitions is None  # auto: the build derives it from its input bytes
    assert config.sources[0].globs("aesthetic") == ()


def test_shuffle_partitions_auto_is_the_default_spelled_out(tmp_path):
    assert load(tmp_path, MINIMAL + "spark:\n  shuffle_partitions: auto\n").spark.shuffle_partitions is None


def test_layers_section_overrides_defaults(tmp_path):
    config = load(tmp_path, MINIMAL + "layers:\n  dmd:\n    partition_by: []\n")
    tables = load_project().tables_by_name
    assert tables["dmd_image_path_suffix_aesthetics"].partition_by(config) == ()
    assert tables["ods_laion_base"].partition_by(config) == ("subset",)


def test_s3_endpoint_is_read(tmp_path):
    config = load(tmp_path, MINIMAL + "s3:\n  endpoint: http://127.0.0.1:8333\n")
    assert config.s3_endpoint == "http://127.0.0.1:8333"


# --- environment overrides --------------------------------------------------------------------


def test_env_overrides_warehouse_and_engine(tmp_path):
    config = load(tmp_path, VALID, environ={
        "LAION_ETL__WAREHOUSE": "s3://other/wh",
        "LAION_ETL__ENGINE": "spark",
        "LAION_ETL__FORMAT": "parquet",
    })
    assert config.warehouse == "s3://other/wh"
    assert config.engine == "spark"
    assert config.format == "parquet"


def test_env_override_relative_path_resolves_against_the_config_folder(tmp_path):
    config = load(tmp_path, VALID, environ={"LAION_ETL__WAREHOUSE": "wh2"})
    assert config.warehouse == str(tmp_path.resolve() / "wh2")


def test_env_override_nested_key_is_parsed_as_int(tmp_path):
    config = load(tmp_path, VALID, environ={"LAION_ETL__SPARK__SHUFFLE_PARTITIONS": "8"})
    assert config.spark.shuffle_partitions == 8
    assert isinstance(config.spark.shuffle_partitions, int)
    assert config.spark.master == "local[2]"  # siblings survive


def test_env_override_nested_key_absent_from_the_file(tmp_path):
    config = load(tmp_path, MINIMAL, environ={"LAION_ETL__SPARK__SHUFFLE_PARTITIONS": "16",
                                              "LAION_ETL__S3__ENDPOINT": "http://localhost:9000"})
    assert config.spark.shuffle_partitions == 16
    assert config.s3_endpoint == "http://localhost:9000"


def test_env_override_comma_separated_value_becomes_a_list(tmp_path):
    config = load(tmp_path, VALID, environ={"LAION_ETL__IMAGES": "s3://b/one, s3://b/two"})
    assert config.images == ("s3://b/one", "s3://b/two")
    aesthetic = load(tmp_path, VALID, environ={
        "LAION_ETL__SOURCES__LAION2B-EN__AESTHETIC": "s3://x/first/*.parquet,s3://x/second/*.parquet"})
    assert aesthetic.sources[0].globs("aesthetic") == ("s3://x/first/*.parquet", "s3://x/second/*.parquet")


def test_env_override_matches_subset_names_case_insensitively(tmp_path):
    config = load(tmp_path, VALID, environ={
        "LAION_ETL__SOURCES__LAION2B-EN__LANGUAGE": "english",
        "LAION_ETL__SOURCES__LAION1B-NOLANG__JOINED": "s3://n/j/*.parquet",
    })
    assert config.subset_names == ("laion2B-en", "laion1B-nolang", "laion2B-multi")  # no new subset appeared
    by_name = {s.name: s for s in config.sources}
    assert by_name["laion2B-en"].language == "english"
    assert by_name["laion1B-nolang"].globs("joined") == ("s3://n/j/*.parquet",)


def test_env_override_that_is_not_yaml_is_taken_as_a_plain_string(tmp_path):
    config = load(tmp_path, VALID, environ={"LAION_ETL__SOURCES__LAION2B-EN__BASE": "*.parquet",
                                            "LAION_ETL__WAREHOUSE": "[oops"})
    assert config.sources[0].globs("base") == (str(tmp_path.resolve() / "*.parquet"),)
    assert config.warehouse == str(tmp_path.resolve() / "[oops")


def test_env_variables_without_the_prefix_are_ignored(tmp_path):
    config = load(tmp_path, VALID, environ={"LAION_ETL_WAREHOUSE": "/nope", "WAREHOUSE": "/nope",
                                            "OTHER__ENGINE": "spark"})
    assert config.warehouse == str(tmp_path.resolve() / "warehouse")
    assert config.engine == "sail"


def test_env_override_is_validated_and_named(tmp_path):
    with pytest.raises(ConfigError, match=r"^spark\.shuffle_partitions: "):
        load(tmp_path, VALID, environ={"LAION_ETL__SPARK__SHUFFLE_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match=r"^engine: 'duckdb' is not one of"):
        load(tmp_path, VALID, environ={"LAION_ETL__ENGINE": "duckdb"})


def test_an_env_override_error_names_its_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"^spark\.shuffle_partitions: .*\(set by the environment variable "
                                          r"LAION_ETL__SPARK__SHUFFLE_PARTITIONS\)$"):
        load(tmp_path, VALID, environ={"LAION_ETL__SPARK__SHUFFLE_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match=r"\(set by the environment variable LAION_ETL__ENGINE\)$"):
        load(tmp_path, VALID, environ={"LAION_ETL__ENGINE": "duckdb"})
    with pytest.raises(ConfigError) as from_file:
        load(tmp_path, VALID + "engine: duckdb\n")
    assert "environment" not in str(from_file.value)


@pytest.mark.parametrize("key, value", [("engine", "0"), ("engine", "false"), ("engine", '""'), ("format", '""'),
                                        ("format", "0"), ("on_bad_file", "false")])
def test_choices_accept_only_their_names(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"^{key}: .* is not one of"):
        load(tmp_path, VALID + f"{key}: {value}\n")


def test_env_is_read_from_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("LAION_ETL__SPARK__SHUFFLE_PARTITIONS", "5")
    assert load_config(write(tmp_path, VALID)).spark.shuffle_partitions == 5


def test_explicit_overrides_beat_the_environment(tmp_path):
    config = load(tmp_path, VALID, environ={"LAION_ETL__ENGINE": "spark"}, overrides={"engine": "sail"})
    assert config.engine == "sail"
    unchanged = load(tmp_path, VALID, environ={"LAION_ETL__ENGINE": "spark"}, overrides={"engine": None})
    assert unchanged.engine == "spark"


# --- errors name the key ----------------------------------------------------------------------


@pytest.mark.parametrize("text, pattern", [
    (MINIMAL + "warehous: typo\n", r"^warehous: unknown key"),
    (MINIMAL + "    bas: x/*.parquet\n", r"^sources\.laion2B-en\.bas: unknown key"),
    (MINIMAL + "    expected_row: x\n", r"^sources\.laion2B-en\.expected_row: unknown key \(expected one of: aesthetic, base, "
     r"expected_parts, expected_rows, joined, language\)"),
    (MINIMAL + "engine: duckdb\n", r"^engine: 'duckdb' is not one of sail, spark, connect"),
    (MINIMAL + "format: orc\n", r"^format: 'orc' is not one of delta, parquet"),
    (MINIMAL.replace("warehouse: wh\n", ""), r"^warehouse: required"),
    (MINIMAL.replace("warehouse: wh", "warehouse: [a, b]"), r"^warehouse: must be a str"),
    ("warehouse: wh\nsources: {}\n", r"^sources: at least one subset is required"),
    ("warehouse: wh\n", r"^sources: required"),
    ("warehouse: wh\nsources:\n  laion2B-en:\n    joined: j/*.parquet\n",
     r"^sources\.laion2B-en\.base: required"),
    ("warehouse: wh\nsources:\n  laion2B-en:\n    base: b/*.parquet\n",
     r"^sources\.laion2B-en\.joined: required"),
    ("warehouse: wh\nsources:\n  laion2B-en: b/*.parquet\n", r"^sources\.laion2B-en: must be a mapping"),
    (MINIMAL + "    aesthetic: 5\n", r"^sources\.laion2B-en\.aesthetic: must be a string or a list"),
    (MINIMAL + "    language: 5\n", r"^sources\.laion2B-en\.language: must be a string"),
    (MINIMAL + "    expected_rows: 0\n", r"^sources\.laion2B-en\.expected_rows: must be a positive whole number"),
    (MINIMAL + "    expected_rows: many\n", r"^sources\.laion2B-en\.expected_rows: must be a positive whole number"),
    (MINIMAL + "    expected_parts: 1.5\n", r"^sources\.laion2B-en\.expected_parts: must be a positive whole number"),
    (MINIMAL + "    expected_parts: true\n", r"^sources\.laion2B-en\.expected_parts: must be a positive whole number"),
    (MINIMAL + "spark:\n  shuffle_partitions: 0\n", r"^spark\.shuffle_partitions: must be a positive integer or auto"),
    (MINIMAL + "spark:\n  shuffle_partitions: -3\n", r"^spark\.shuffle_partitions: must be a positive integer or auto"),
    (MINIMAL + "spark:\n  shuffle_partitions: two\n", r"^spark\.shuffle_partitions: must be a positive integer or auto"),
    (MINIMAL + "spark:\n  shuffle_partitions: true\n", r"^spark\.shuffle_partitions: must be a positive integer or auto"),
    (MINIMAL + "spark:\n  shuffle_partitions: 2.5\n", r"^spark\.shuffle_partitions: must be a positive integer or auto"),
    (MINIMAL + "spark:\n  executors: 2\n", r"^spark\.executors: unknown key"),
    (MINIMAL + "engine: connect\n", r"^connect_url: engine 'connect' needs a Spark Connect URL"),
    (MINIMAL + "engine: connect\nconnect_url: http://host:15002\n", r"^connect_url: "),
    (MINIMAL + "layers:\n  gold:\n    partition_by: [subset]\n", r"^layers\.gold: unknown layer"),
    (MINIMAL + "layers:\n  dms:\n    zorder: [hash]\n", r"^layers\.dms\.zorder: unknown key"),
    (MINIMAL + "s3:\n  endpoint_url: http://x\n", r"^s3\.endpoint_url: unknown key"),
    (MINIMAL + "images: 7\n", r"^images: must be a string or a list"),
])
def test_errors_name_the_key(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_project().check(load(tmp_path, text))


def test_connect_engine_with_sc_url_is_accepted(tmp_path):
    config = load(tmp_path, MINIMAL + "engine: connect\nconnect_url: sc://spark.example:15002\n")
    assert config.engine == "connect" and config.connect_url == "sc://spark.example:15002"


def test_invalid_yaml_names_the_file_and_place_on_one_line(tmp_path):
    path = write(tmp_path, "warehouse: wh\nsources: [unclosed\n", name="broken.yaml")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML at line \d+, column \d+: ") as info:
        load_config(path, environ={})
    assert "\n" not in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n", name="list.yaml")
    with pytest.raises(ConfigError, match=r"list\.yaml: the top level must be a mapping"):
        load_config(path, environ={})


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "absent.yaml"
    with pytest.raises(ConfigError, match=r"config file not found: .*absent\.yaml"):
        load_config(missing, environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path, environ={})  # a folder is not a config file


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
