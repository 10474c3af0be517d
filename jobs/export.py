"""Export filtered wide-table shards for img2dataset, as a spark-submit job.

    spark-submit --master yarn --deploy-mode client \
        --packages io.delta:delta-spark_2.13:4.0.1 \
        --archives laion-env.tar.gz#laion-env --conf spark.pyspark.python=./laion-env/bin/python \
        --py-files dist/etl.zip \
        jobs/export.py --config conf/cluster.yaml --preset sd2 --out /data/exports/sd2

    spark-submit --master local[2] jobs/export.py --config my-parquet-config.yaml --preset sd2 --out exports/sd2
"""

import sys

from etl.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]], submitted=True))
