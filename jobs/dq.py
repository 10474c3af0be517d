"""Validate the current LAION table versions with their contracts' rules, as a spark-submit job.

Writes `meta.dq_results`, `meta.runs` and the HTML report; exits 1 when a `fail` rule breaks.

    spark-submit --master yarn --deploy-mode client \
        --packages io.delta:delta-spark_2.13:4.0.1 \
        --archives laion-env.tar.gz#laion-env --conf spark.pyspark.python=./laion-env/bin/python \
        --py-files dist/etl.zip \
        jobs/dq.py --config conf/cluster.yaml [--tables dms_laion_wide]

    spark-submit --master local[2] jobs/dq.py --config my-parquet-config.yaml
"""

import sys

from etl.cli import main

if __name__ == "__main__":
    sys.exit(main(["dq", *sys.argv[1:]], submitted=True))
