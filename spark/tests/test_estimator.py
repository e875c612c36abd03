"""GotflowEstimator: barrier-mode training on local[2] with the real
gotflow binary, on the committed digits data."""

import json
import os
import subprocess

import pytest
from conftest import ROOT, gotflow_processes
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import functions as F

from gotflow_spark import GotflowEstimator, GotflowModel

DIGITS = os.path.join(ROOT, "examples", "digits", "digits.parquet")
LOSS = json.dumps({"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": True}})


@pytest.fixture(scope="module")
def bundle(gotflow, tmp_path_factory):
    """The digits MLP converted to a bundle (the driver needs Python TF for
    this once; the executors never do)."""
    out = tmp_path_factory.mktemp("digits") / "bundle"
    p = subprocess.run([gotflow, "convert", "keras", os.path.join(ROOT, "examples", "digits", "model.py") + ":mlp",
                        "--loss", LOSS, "--metric", "accuracy", "--label", "label:int32:-1", "-o", str(out)],
                       capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode()
    return str(out)


@pytest.fixture(scope="module")
def digits(spark):
    """digits.parquet with the 64 pixels as columns p0..p63, as ETL would
    leave them."""
    df = spark.read.parquet(DIGITS)
    return df.select("label", "split", *[F.col("pixels")[i].alias(f"p{i}") for i in range(64)])


def test_pipeline_fit_save_load_accuracy(spark, bundle, digits, tmp_path):
    """VectorAssembler -> GotflowEstimator (2 barrier tasks) reaches >= 95 %
    held-out accuracy; the fitted pipeline saves and loads to identical
    predictions; no gotflow process is left."""
    train = digits.where("split = 'train'")
    heldout = digits.where("split = 'heldout'")
    est = GotflowEstimator(bundle=bundle, inputCol="features", labelCol="label", numWorkers=2, mode="hogwild",
                           optimizer="adam", learningRate=0.003, epochs=30, miniBatchSize=32,
                           exportDir=str(tmp_path / "export"), argmaxCol="predicted", predictionCol="logits")
    pipe = Pipeline(stages=[VectorAssembler(inputCols=[f"p{i}" for i in range(64)], outputCol="features"), est])
    fitted = pipe.fit(train)
    assert isinstance(fitted.stages[1], GotflowModel)
    assert len(est.lastMetrics) == 30 and est.lastMetrics[-1]["loss"] < est.lastMetrics[0]["loss"]
    out = fitted.transform(heldout).cache()
    acc = MulticlassClassificationEvaluator(labelCol="label", predictionCol="predicted", metricName="accuracy").evaluate(
        out.withColumn("label", F.col("label").cast("double")))
    assert acc >= 0.95, acc
    path = str(tmp_path / "pipeline")
    fitted.write().overwrite().save(path)
    loaded = PipelineModel.load(path)
    a = {tuple(r.features.toArray()): r.logits for r in out.select("features", "logits").collect()}
    b = {tuple(r.features.toArray()): r.logits for r in loaded.transform(heldout).select("features", "logits").collect()}
    assert a == b
    assert not gotflow_processes()


@pytest.mark.parametrize("kwargs,msg", [
    ({"mode": "fast"}, "mode 'fast' is not an update mode; want one of hogwild, async-lock, sync, bounded-staleness"),
    ({"numWorkers": 3}, "numWorkers 3 needs that many barrier tasks at once, but the cluster has 2 task slots"),
    ({"inputCol": "nope"}, "inputCol: column 'nope'"),
    ({"optimizer": "lbfgs"}, "optimizer 'lbfgs' is unknown"),
], ids=["unknown mode", "too few slots", "missing column", "unknown optimizer"])
def test_fit_preflight(spark, bundle, digits, kwargs, msg):
    df = VectorAssembler(inputCols=[f"p{i}" for i in range(64)], outputCol="features").transform(digits)
    args = dict(bundle=bundle, inputCol="features", epochs=1)
    args.update(kwargs)
    with pytest.raises((ValueError, RuntimeError)) as e:
        GotflowEstimator(**args).fit(df)
    assert msg in str(e.value)


def test_fit_empty_partition(spark, bundle, digits):
    """One row for two workers: a partition is empty, and the stage says so."""
    df = VectorAssembler(inputCols=[f"p{i}" for i in range(64)], outputCol="features").transform(digits.limit(1))
    with pytest.raises(Exception) as e:
        GotflowEstimator(bundle=bundle, inputCol="features", epochs=1).fit(df)
    assert "hold no rows" in str(e.value)
    assert not gotflow_processes()


def test_fit_with_mapping_options(spark, bundle):
    """inputOptions/labelOptions carry gotflow's --map options: the raw
    pixels array, with null rows and a nullable label, trains (fill, len,
    cast) and the returned model feeds held-out rows the same way."""
    df = spark.read.parquet(DIGITS).withColumn("rid", F.monotonically_increasing_id())
    df = df.withColumn("pixels", F.when(F.col("rid") % 50 == 7, F.lit(None)).otherwise(F.col("pixels")))
    df = df.withColumn("label", F.when(F.col("rid") % 50 == 7, F.lit(None)).otherwise(F.col("label").cast("long")))
    train = df.where("split = 'train'")
    heldout = df.where("split = 'heldout' AND pixels IS NOT NULL")
    est = GotflowEstimator(bundle=bundle, inputCol="pixels", labelCol="label", inputOptions="fill=0 len=64 cast",
                           labelOptions="fill=0 cast", numWorkers=2, optimizer="adam", learningRate=0.003, epochs=15,
                           argmaxCol="predicted")
    model = est.fit(train)
    assert model.getOrDefault(model.inputMapping) == {"pixels": "pixels fill=0 len=64 cast"}
    out = model.transform(heldout).cache()
    acc = MulticlassClassificationEvaluator(labelCol="label", predictionCol="predicted", metricName="accuracy").evaluate(
        out.withColumn("label", F.col("label").cast("double")))
    assert acc >= 0.9, acc
    assert not gotflow_processes()
