"""Spark Structured Streaming against Runnel through Spark's own Kafka source and sink: reads
the JSON payments of a topic, keeps a running sum per user, and writes each updated sum back
to another topic as JSON keyed by the user. It runs until what is in the topic now has been
processed (trigger availableNow) and keeps its state in a checkpoint, so a second run adds only
what came since. Prints "spark ok <rows read>".

Usage: python spark_running_sum.py <bootstrap> <checkpoint dir> <comma-separated jars>
"""

import sys

from pyspark.sql import SparkSession, functions as F
from pyspark.sql.types import LongType, StructField, StructType

bootstrap, checkpoint, jars = sys.argv[1], sys.argv[2], sys.argv[3]

spark = (SparkSession.builder.master('local[2]').appName('runnel-running-sum')
         .config('spark.jars', jars)
         .config('spark.ui.enabled', 'false')
         .config('spark.ui.showConsoleProgress', 'false')
         .config('spark.sql.shuffle.partitions', '2')
         .getOrCreate())
spark.sparkContext.setLogLevel('WARN')

schema = StructType([StructField('amount', LongType())])
payments = (spark.readStream.format('kafka')
            .option('kafka.bootstrap.servers', bootstrap)
            .option('subscribe', 'payments')
            .option('startingOffsets', 'earliest')
            .load())
totals = (payments
          .select(F.col('key').cast('string').alias('user_id'),
                  F.from_json(F.col('value').cast('string'), schema).alias('payment'))
          .groupBy('user_id')
          .agg(F.sum('payment.amount').alias('total')))
query = (totals
         .select(F.col('user_id').alias('key'),
                 F.to_json(F.struct('total')).alias('value'))
         .writeStream.format('kafka')
         .option('kafka.bootstrap.servers', bootstrap)
         .option('topic', 'totals')
         .option('checkpointLocation', checkpoint)
         .outputMode('update')
         .trigger(availableNow=True)
         .start())
query.awaitTermination(300)
if query.isActive or query.exception() is not None:
    raise SystemExit(f'the query did not finish: {query.exception()}')
rows = sum(progress['numInputRows'] for progress in query.recentProgress)
spark.stop()
print(f'spark ok {rows}')
