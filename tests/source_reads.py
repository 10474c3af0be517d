"""A build with a watch on its source files: which are read again after their ODS table was
written, and which families' rejected rows were asked for. In a process of its own it runs
`laion-etl build ARGS` and prints that as JSON as its last line: pyspark will not start the JVM
engine in a process that has used Spark Connect (Sail) before, as a test process has:

    python tests/source_reads.py --config planted.yaml --force
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


class SourceReads:
    """Which source files are read after their ODS table was written, and which families' rejected
    rows were asked for. Right after each ODS write its files' access times are set in the past
    (ext4 `relatime` then records the next read of the file, footer or data); the stat calls of
    the bookkeeping leave them alone."""

    def __init__(self, patch=setattr) -> None:
        from etl.build import materialise
        from etl.build.views import SourceFamilyView

        self.watched: dict[str, int] = {}
        self.rejected_asked: list[tuple[str, tuple[str, ...]]] = []
        write, rejected_rows = materialise._write, SourceFamilyView.rejected_rows

        def write_then_watch(spark, plan, table, df, run_id, subsets):
            written = write(spark, plan, table, df, run_id, subsets)
            for source in materialise._read_files(plan, table, subsets):
                status = Path(source.path).stat()
                past = status.st_mtime_ns - 10 ** 12
                os.utime(source.path, ns=(past, status.st_mtime_ns))
                self.watched[source.path] = past
            return written

        def asked(view, spark, subsets):
            self.rejected_asked.append((view.family.name, tuple(subsets)))
            return rejected_rows(view, spark, subsets)

        patch(materialise, "_write", write_then_watch)
        patch(SourceFamilyView, "rejected_rows", asked)

    def forget(self) -> None:
        """Start afresh for the next build (which reads every footer when it plans)."""
        self.watched.clear()
        self.rejected_asked.clear()

    def read_again(self) -> list[str]:
        """Files read after their table's write, as `folder/name`."""
        return sorted(f"{Path(p).parent.name}/{Path(p).name}" for p, past in self.watched.items()
                      if os.stat(p).st_atime_ns != past)


def watched_build(argv: list[str]) -> dict:
    from etl.cli import main

    reads = SourceReads()
    code = main(["build", *argv])
    return {"exit_code": code, "watched": len(reads.watched), "read_again": reads.read_again(),
            "rejected_asked": reads.rejected_asked}


if __name__ == "__main__":
    print(json.dumps(watched_build(sys.argv[1:])))
