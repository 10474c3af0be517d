"""The demo's wide table is the same, row for row, as the last deliberate change left it.

A fingerprint over every row (sorted, canonical JSON, the sources folder replaced by `<root>`)
of the demo build (`laion-etl synth --rows 20000 --seed 42 --images webdataset`, conf/demo.yaml).
A change to the wide table's rows must change it here on purpose, saying why. History:
- 6873255a…2e3b: the code at 89c56ec (before issue 10's refactor), unchanged through 2a1401d.
- 048484ba…d092 (issue 13): joined rows whose hash no base row holds now carry the hash's image
  and aesthetic score. Built with 2a1401d and with this change, the two tables differ in 55 of
  19,903 rows, all without a base row: 11 gained an image, 53 a score; no other column and no
  non-null value changed.
"""

from __future__ import annotations

import hashlib
import json
import math

from helpers import build_synthetic, read_delta

DEMO_WIDE_TABLE_FINGERPRINT = "048484ba3f2d8b60139339c15db93a3e6b0ab11e8b16f3b688ba01ea6259d092"


def fingerprint(table, root: str) -> str:
    def canonical(value):
        if isinstance(value, float):
            return "nan" if math.isnan(value) else repr(value)
        if isinstance(value, str):
            return value.replace(root, "<root>")
        return value

    rows = sorted(json.dumps([canonical(v) for v in row.values()], default=str) for row in table.to_pylist())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def test_the_demo_wide_table_is_row_for_row_unchanged(tmp_path):
    build_synthetic(tmp_path, rows=20_000, seed=42, images="webdataset")
    wide = read_delta(tmp_path / "warehouse" / "dms" / "dms_laion_wide")
    assert wide.num_rows == 19_903
    assert fingerprint(wide, str(tmp_path / "sources")) == DEMO_WIDE_TABLE_FINGERPRINT


def test_the_fingerprint_sees_a_changed_value(tmp_path):
    build_synthetic(tmp_path, rows=2_000, seed=42, images=None)
    wide = read_delta(tmp_path / "warehouse" / "dms" / "dms_laion_wide")
    rows = wide.to_pylist()
    rows[0]["width"] = (rows[0]["width"] or 0) + 1
    changed = type(wide).from_pylist(rows, schema=wide.schema)
    assert fingerprint(changed, "") != fingerprint(wide, "")
