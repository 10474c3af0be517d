"""Rebuild the LAION wide table (ODS -> DMD -> DMS) as a spark-submit batch job.

On a cluster (Delta: etl/engine/jvm_packages.py names the artifact):

    spark-submit --master yarn --deploy-mode client \
        --packages io.delta:delta-spark_2.13:4.0.1 \
        --conf spark.pyspark.python=./laion-env/bin/python \
        --archives laion-env.tar.gz#laion-env \
        --py-files dist/etl.zip \
        jobs/build.py --config conf/cluster.yaml [--layers ods,dmd,dms] [--subsets laion2B-en]

On one machine with the parquet format (no jars to download):

    spark-submit --master local[2] jobs/build.py --config conf/local-parquet.yaml

Under spark-submit the engine is always the JVM `spark` engine, whatever the config says.
"""

import sys

from etl.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]], submitted=True))
