"""Export filters: presets load and validate; ad-hoc predicates are accepted or refused by name."""

from __future__ import annotations

import pytest

from etl.export.filters import (
    ADHOC_NAME,
    ALLOWED_FUNCTIONS,
    MAX_PREDICATE_CHARS,
    FilterError,
    Preset,
    ResolvedFilter,
    load_presets,
    resolve_filter,
    validate_predicate,
)
from etl.project.project import load_project

PROJECT = load_project()
PRESET_FILES = PROJECT.preset_files


@pytest.fixture(scope="module")
def columns() -> dict[str, str]:
    return PROJECT.wide_table.contract.column_types


def test_columns_come_from_the_wide_table_contract(columns):
    contract = next(t.contract for t in PROJECT.tables if t.name == "dms_laion_wide")
    assert list(columns.items()) == [(c.name, c.type) for c in contract.columns]
    assert columns["url"] == "string" and columns["width"] == "int" and columns["punsafe"] == "float"


# -- presets ----------------------------------------------------------------------------------


def test_presets_load_and_validate(columns):
    (presets_file,) = PRESET_FILES
    presets = load_presets(presets_file, columns)
    assert {"sd2", "laion_art", "high_resolution"} <= set(presets)
    for name, preset in presets.items():
        assert isinstance(preset, Preset) and preset.name == name and preset.description
        assert validate_predicate(preset.where, columns) == preset.where  # stored normalised
    assert presets["sd2"].where == (
        "language = 'en' AND aesthetic_score >= 4.5 AND punsafe <= 0.98 AND width >= 512 AND height >= 512")
    assert presets["laion_art"].where == "aesthetic_score > 8 AND pwatermark < 0.8 AND punsafe < 0.5"
    assert presets["high_resolution"].where == "width >= 1024 AND height >= 1024"


def test_broken_preset_file_names_the_preset(tmp_path, columns):
    path = tmp_path / "presets.yaml"
    path.write_text("presets:\n  fine:\n    where: width > 1\n  broken:\n    description: x\n"
                    "    where: nope > 1; drop table laion.dms_laion_wide\n")
    with pytest.raises(FilterError, match=r"preset 'broken'.*';' is not allowed"):
        load_presets(path, columns)
    path.write_text("presets:\n  bad_col:\n    where: nope > 1\n")
    with pytest.raises(FilterError, match=r"preset 'bad_col'.*unknown column.*nope"):
        load_presets(path, columns)
    path.write_text("presets:\n  typo:\n    wher: width > 1\n")
    with pytest.raises(FilterError, match=r"preset 'typo'.*unknown key.*wher"):
        load_presets(path, columns)
    path.write_text(f"presets:\n  {ADHOC_NAME}:\n    where: width > 1\n")
    with pytest.raises(FilterError, match="reserved"):
        load_presets(path, columns)
    path.write_text("presets: {}\n")
    with pytest.raises(FilterError, match="non-empty 'presets:'"):
        load_presets(path, columns)
    with pytest.raises(FilterError, match="cannot read"):
        load_presets(tmp_path / "missing.yaml", columns)


# -- accepted ---------------------------------------------------------------------------------

ACCEPTED = {
    "text like '%;%'": "text LIKE '%;%'",
    "language in ('en','de')": "language IN ('en', 'de')",
    "aesthetic_score between 5 and 6": "aesthetic_score BETWEEN 5 AND 6",
    "not (punsafe > 0.5)": "NOT (punsafe > 0.5)",
    "image_path is not null": "NOT image_path IS NULL",
    "lower(language) = 'en'": "LOWER(language) = 'en'",
    "URL = 'x'": "url = 'x'",  # Spark resolves names case-insensitively; written as the contract does
    "`url` = 'x'": "url = 'x'",
    "text = ';'": "text = ';'",
    "text = '-- not a comment /* nor this */'": "text = '-- not a comment /* nor this */'",
    'text = "it\'s"': "text = 'it\\'s'",
    "width * height >= 1000000 and width / height between 0.5 and 2":
        "width * height >= 1000000 AND width / height BETWEEN 0.5 AND 2",
    "coalesce(punsafe, 1) <= 0.5 or nvl(pwatermark, 1) < 0.8":
        "COALESCE(punsafe, 1) <= 0.5 OR COALESCE(pwatermark, 1) < 0.8",
    "startswith(url, 'https') and endswith(url, '.jpg') and contains(text, 'cat')":
        "STARTSWITH(url, 'https') AND ENDSWITH(url, '.jpg') AND CONTAINS(text, 'cat')",
    "not isnan(similarity) and floor(similarity * 10) >= 3": "NOT ISNAN(similarity) AND FLOOR(similarity * 10) >= 3",
    "cast(hash as string) like '12%'": "CAST(hash AS STRING) LIKE '12%'",
    "text not like 'a!%%' escape '!'": "text NOT LIKE 'a!%%' ESCAPE '!'",
    "language is null or language <> 'en'": "language IS NULL OR language <> 'en'",
    "true": "TRUE",
}


@pytest.mark.parametrize("expr", list(ACCEPTED))
def test_accepted_expressions_are_normalised(expr, columns):
    assert validate_predicate(expr, columns) == ACCEPTED[expr]


PRESETS = load_presets(PRESET_FILES[0], PROJECT.wide_table.contract.column_types)


@pytest.mark.parametrize("expr", list(ACCEPTED) + [p.where for p in PRESETS.values()])
def test_normalised_output_revalidates_to_itself(expr, columns):
    once = validate_predicate(expr, columns)
    assert validate_predicate(once, columns) == once


def test_boolean_column_may_stand_alone():
    cols = {"url": "string", "ok": "boolean"}
    assert validate_predicate("ok and not ok", cols) == "ok AND NOT ok"
    assert validate_predicate("ok is true", cols) == "ok IS TRUE"
    with pytest.raises(FilterError, match="'url' is not boolean"):
        validate_predicate("ok and url", cols)


def test_allow_list_is_documented():
    import etl.export.filters

    for name in ALLOWED_FUNCTIONS.values():
        assert name in etl.export.filters.__doc__


# -- refused ----------------------------------------------------------------------------------

REFUSED = [
    # (expression, regex the message must match)
    ("", r"empty filter predicate"),
    ("   \n ", r"empty filter predicate"),
    ("1=1; drop table laion.dms_laion_wide", r"';' is not allowed"),
    ("width > 1;", r"';' is not allowed"),
    ("select 1", r"subqueries are not allowed.*SELECT 1"),
    ("(select max(width) from laion.dms_laion_wide)", r"subqueries are not allowed"),
    ("drop table laion.dms_laion_wide", r"not a statement \(DROP\)"),
    ("insert into laion.dms_laion_wide select * from laion.dms_laion_wide", r"not a statement \(INSERT\)"),
    ("set spark.sql.ansi.enabled=false", r"not a statement \(SET\)"),
    ("add jar /tmp/evil.jar", r"not a statement \(ADD JAR\)"),
    ("url = 'x' or exists (select 1)", r"EXISTS and subqueries are not allowed.*EXISTS\(SELECT 1\)"),
    ("hash in (select hash from laion.ods_laion_base)", r"subqueries are not allowed.*SELECT hash FROM laion.ods_laion_base"),
    ("nope > 1", r"unknown column in filter predicate: nope; known columns: sample_id, url, text, width"),
    ("nope > 1 and other < 2", r"unknown columns in filter predicate: nope, other; known columns:"),
    ("url = x", r"unknown column.*: x;"),
    ("t.url = 'x'", r"table-qualified column 't.url'.*write just 'url'"),
    ("laion.dms_laion_wide.url = 'x'", r"table-qualified column"),
    ("*", r"'\*' is not allowed"),
    ("count(*) > 1", r"aggregate functions are not allowed.*COUNT"),
    ("max(width) > 1", r"aggregate functions are not allowed.*MAX"),
    ("sum(width) over () > 1", r"window functions are not allowed"),
    ("row_number() over (order by url) = 1", r"window functions are not allowed"),
    ("java_method('java.lang.Runtime','getRuntime')", r"function java_method is not allowed.*allowed: lower, upper"),
    ("reflect('java.lang.System', 'exit', '1') = 'x'", r"function reflect is not allowed"),
    ("my_udf(url)", r"function my_udf is not allowed"),
    ("input_file_name() = 'x'", r"function input_file_name is not allowed"),
    ("text rlike '(a+)+$'", r"function REGEXP_LIKE is not allowed"),
    ("if(width > 1, true, false)", r"function IF is not allowed"),
    ("round(similarity, 2) > 0.3", r"function ROUND is not allowed"),
    ("exists(array(1), x -> x > 1)", r"EXISTS and subqueries are not allowed"),
    ("width > 0 -- comment", r"comments are not allowed.*'comment'"),
    ("width > 0 --", r"comments are not allowed"),
    ("width > 0 /* c */", r"comments are not allowed.*'c'"),
    ("/*+ REPARTITION(1) */ width > 0", r"comments are not allowed"),
    ("/* only a comment */", r"comments are not allowed"),
    ("x := 1", r"assignment \(':='\) is not allowed"),
    ("width > ?", r"placeholders and parameters are not allowed"),
    ("width > :w", r"placeholders and parameters are not allowed"),
    ("text = '${env:AWS_SECRET_ACCESS_KEY}'", r"'\$\{' is not allowed.*substitutes"),
    ("text = '\\u0024{env:HOME}'", r"'\$\{' is not allowed"),  # escapes decoded before the check
    ("text = 'it''s'", r"adjacent string literals"),
    ("width + 1", r"must be a boolean expression.*'width \+ 1' is not boolean"),
    ("url", r"must be a boolean expression.*'url' is not boolean"),
    ("null", r"must be a boolean expression.*'NULL' is not boolean"),
    ("width > 1 and height", r"'height' is not boolean"),
    ("not url", r"'url' is not boolean"),
    ("width is true", r"IS TRUE / IS FALSE needs a boolean operand.*'width'"),
    ("width in ()", r"IN needs at least one value"),
    ("url[0] = 'h'", r"unsupported syntax.*Bracket"),
    ("cast(url as array<string>) is null", r"cast to ARRAY<STRING> is not allowed"),
    ("'unterminated", r"cannot read filter predicate.*unterminated"),
    ("width > 1 limit 1", r"cannot parse filter predicate at column \d+"),
    ("width > 1 or", r"cannot parse filter predicate"),
    ("(" * 65 + "width > 1" + ")" * 65, r"nested too deeply"),
    ("width > 1 and " * 800 + "width > 1", r"too long: \d[\d,]* characters \(at most 10,000\)"),
]


@pytest.mark.parametrize("expr,message", REFUSED, ids=[e[:40] or "<empty>" for e, _ in REFUSED])
def test_refused_with_a_message_naming_the_problem(expr, message, columns):
    with pytest.raises(FilterError, match=message):
        validate_predicate(expr, columns)


def test_filter_error_is_a_value_error(columns):
    with pytest.raises(ValueError):
        validate_predicate("nope > 1", columns)


def test_length_limit_is_on_characters(columns):
    padded = "width > 1" + " " * (MAX_PREDICATE_CHARS - len("width > 1"))
    assert validate_predicate(padded, columns) == "width > 1"
    with pytest.raises(FilterError, match="too long"):
        validate_predicate(padded + " ", columns)


def test_non_string_is_refused(columns):
    with pytest.raises(FilterError, match="must be a string"):
        validate_predicate(None, columns)  # type: ignore[arg-type]


# -- resolve_filter ---------------------------------------------------------------------------


def test_resolve_preset(columns):
    resolved = resolve_filter("laion_art", None, columns, PRESET_FILES)
    assert resolved == ResolvedFilter("laion_art", "aesthetic_score > 8 AND pwatermark < 0.8 AND punsafe < 0.5")
    assert resolved.is_preset


def test_resolve_where(columns):
    resolved = resolve_filter(None, "language in ('en','de')", columns)
    assert resolved == ResolvedFilter(ADHOC_NAME, "language IN ('en', 'de')")
    assert not resolved.is_preset


def test_resolve_needs_exactly_one(columns):
    with pytest.raises(FilterError, match="not both"):
        resolve_filter("sd2", "width > 1", columns)
    with pytest.raises(FilterError, match="give a filter"):
        resolve_filter(None, None, columns)


def test_resolve_unknown_preset_lists_the_known_ones(columns):
    with pytest.raises(FilterError, match=r"unknown filter preset 'sd3'; known presets: .*high_resolution.*laion_art.*sd2"):
        resolve_filter("sd3", None, columns, PRESET_FILES)


def test_resolve_refuses_injection(columns):
    with pytest.raises(FilterError, match="';' is not allowed"):
        resolve_filter(None, "1=1; drop table laion.dms_laion_wide", columns)


def test_resolve_checks_presets_against_the_given_columns():
    with pytest.raises(FilterError, match=r"preset 'sd2'.*unknown column"):
        resolve_filter("sd2", None, {"url": "string", "text": "string"}, PRESET_FILES)
