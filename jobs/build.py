"""Rebuild the LAION wide table (ODS -> DMD -> DMS) as a spark-submit batch job.

`laion-etl submit` assembles the spark-submit line and runs it (pyspark's spark-submit, this
script, the package zipped for --py-files, delta-spark, Delta's SQL extension, the executors'
Python, the config's spark.conf); the job's arguments follow `--` unchanged:

    laion-etl submit --master spark://127.0.0.1:7077 -- build --config conf/cluster.yaml \
        [--layers ods,dmd,dms] [--subsets laion2B-en]

`laion-etl submit --print -- build --config conf/cluster.yaml` prints that exact line instead,
for people who write their own. With `format: parquet` no jar is needed, for instance on one machine:

    LAION_ETL__FORMAT=parquet LAION_ETL__WAREHOUSE=/tmp/laion-parquet \
        laion-etl submit --master 'local[2]' -- build --config conf/cluster.yaml

Under spark-submit the engine is always the JVM `spark` engine, whatever the config says.
"""

import sys

from etl.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]], submitted=True))
