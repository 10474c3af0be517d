"""Validate the current LAION table versions with their contracts' rules, as a spark-submit job.

Writes `meta.dq_results`, `meta.runs` and the HTML report; exits 1 when a `fail` rule breaks.

    laion-etl submit --master spark://127.0.0.1:7077 -- dq --config conf/cluster.yaml [--tables dms_laion_wide]

runs it under spark-submit; `laion-etl submit --print -- dq --config conf/cluster.yaml` prints the
exact spark-submit line instead (see jobs/build.py).
"""

import sys

from etl.cli import main

if __name__ == "__main__":
    sys.exit(main(["dq", *sys.argv[1:]], submitted=True))
