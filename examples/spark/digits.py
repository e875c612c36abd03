"""The digits data as a Spark DataFrame -> VectorAssembler ->
GotflowEstimator (2 barrier tasks) -> transform -> Spark's
MulticlassClassificationEvaluator.

    make build
    bin/gotflow convert keras examples/digits/model.py:mlp \\
        --loss '{"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}' \\
        --metric accuracy --label label:int32:-1 -o build/digits
    PYSPARK_PYTHON=.venv/bin/python .venv/bin/python examples/spark/digits.py build/digits

The executors need no TensorFlow: they run bin/gotflow (spark.gotflow.binary).
"""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "spark"))

from pyspark.ml import Pipeline  # noqa: E402
from pyspark.ml.evaluation import MulticlassClassificationEvaluator  # noqa: E402
from pyspark.ml.feature import VectorAssembler  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from gotflow_spark import GotflowEstimator  # noqa: E402


def main(bundle):
    """Trains on the train split with two barrier tasks and prints the
    held-out accuracy."""
    spark = (SparkSession.builder.master("local[2]").appName("gotflow digits")
             .config("spark.ui.enabled", "false")
             .config("spark.gotflow.binary", os.path.join(ROOT, "bin", "gotflow"))
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.read.parquet(os.path.join(ROOT, "examples", "digits", "digits.parquet"))
    # ETL leaves the pixels as 64 columns; VectorAssembler makes the features.
    df = df.select("label", "split", *[F.col("pixels")[i].alias(f"p{i}") for i in range(64)])
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=[f"p{i}" for i in range(64)], outputCol="features"),
        GotflowEstimator(bundle=bundle, inputCol="features", labelCol="label", numWorkers=2, mode="hogwild",
                         optimizer="adam", learningRate=0.003, epochs=30, miniBatchSize=32,
                         predictionCol="logits", argmaxCol="prediction"),
    ])
    model = pipeline.fit(df.where("split = 'train'"))
    scored = model.transform(df.where("split = 'heldout'")).withColumn("label", F.col("label").cast("double"))
    acc = MulticlassClassificationEvaluator(labelCol="label", predictionCol="prediction",
                                            metricName="accuracy").evaluate(scored)
    print(f"held-out accuracy: {acc:.4f} on {scored.count()} rows")
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "demo", "bundle"))
