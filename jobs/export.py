"""Export filtered wide-table shards for img2dataset, as a spark-submit job.

    laion-etl submit --master spark://127.0.0.1:7077 -- export --config conf/cluster.yaml \
        --preset sd2 --out /data/exports/sd2

runs it under spark-submit; `laion-etl submit --print -- export --config conf/cluster.yaml
--preset sd2 --out /data/exports/sd2` prints the exact spark-submit line instead (see jobs/build.py).
"""

import sys

from etl.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]], submitted=True))
