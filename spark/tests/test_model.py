"""GotflowModel against a real local[2] Spark and the real gotflow binary."""

import os
import shutil
import signal
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from conftest import ROOT, gotflow_processes, run_predict
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gotflow_spark import GotflowModel

MLP = os.path.join(ROOT, "scripts", "fixtures", "mlp_savedmodel")  # features float32[-1,32] -> output_0 [-1,10]
WIDTH = 32


def features(n, seed=0, sparse_every=0):
    """n rows of 32 float32 values in [0, 1); with sparse_every k, every k-th
    row is mostly zeros (so VectorAssembler stores it as a sparse vector)."""
    x = np.random.RandomState(seed).rand(n, WIDTH).astype(np.float32)
    if sparse_every:
        x[::sparse_every, 3:] = 0
    return x


def array_frame(spark, x, partitions=2):
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("x", T.ArrayType(T.FloatType()))])
    return spark.createDataFrame([(i, x[i].tolist()) for i in range(len(x))], schema).repartition(partitions, "id")


def by_partition(df, cols):
    """The rows of each partition, in order: [(partition id, [rows])]."""
    rows = df.select(F.spark_partition_id().alias("pid"), *cols).collect()
    parts = {}
    for r in rows:
        parts.setdefault(r.pid, []).append(r)
    return sorted(parts.items())


def predictions(rows, col="prediction"):
    return {r.id: np.asarray(r[col], dtype=np.float32) for r in rows}


def test_transform_equals_gotflow_predict(spark, gotflow, tmp_path):
    """Each partition's predictions equal what `gotflow predict` writes for
    the same rows in the same order (same batches): max |delta| = 0."""
    x = features(3000)
    df = array_frame(spark, x).cache()
    model = GotflowModel(modelPath=MLP, inputCols=["x"], batchSize=256)
    out = model.transform(df)
    assert out.schema["prediction"].dataType == T.ArrayType(T.FloatType(), False)
    got = predictions(out.collect())
    assert len(got) == 3000
    worst = 0.0
    for pid, rows in by_partition(df, ["id", "x"]):
        ids = [r.id for r in rows]
        table = pa.table({"features": pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate([x[i] for i in ids]), pa.float32()), WIDTH)})
        d = tmp_path / f"p{pid}"
        d.mkdir()
        want = run_predict(gotflow, MLP, table, 256, d).column("output_0").to_pylist()
        for i, w in zip(ids, want):
            worst = max(worst, float(np.abs(got[i] - np.asarray(w, np.float32)).max()))
    assert worst == 0.0
    df.unpersist()


def test_vector_and_array_columns(spark):
    """VectorAssembler's vectors (dense and sparse rows) give the same
    predictions as an array column of the same values."""
    x = features(400, seed=1, sparse_every=2)
    cols = [f"c{j}" for j in range(WIDTH)]
    df = spark.createDataFrame([(i, *map(float, x[i])) for i in range(len(x))], ["id", *cols]).repartition(2, "id")
    df = VectorAssembler(inputCols=cols, outputCol="vec").transform(df)
    df = df.withColumn("arr", F.expr("transform(array(" + ",".join(cols) + "), v -> cast(v as float))"))
    kinds = {type(r.vec).__name__ for r in df.select("vec").collect()}
    assert kinds == {"DenseVector", "SparseVector"}
    via_vec = GotflowModel(modelPath=MLP, inputCols=["vec"], batchSize=64).transform(df)
    via_arr = GotflowModel(modelPath=MLP, inputMapping={"arr": "features"}, predictionCol="p2", batchSize=64).transform(via_vec)
    rows = via_arr.select("id", "prediction", "p2", "vec").collect()
    assert len(rows) == 400
    for r in rows:
        assert np.array_equal(np.asarray(r.prediction, np.float32), np.asarray(r.p2, np.float32)), r.id
    assert type(rows[0].vec).__name__ in ("DenseVector", "SparseVector")  # the input column comes back as it was


def test_pipeline_save_load(spark, tmp_path):
    """A PipelineModel with a GotflowModel saves (with a copy of the model)
    and loads back to identical predictions, even once the original model
    directory is gone."""
    model_dir = tmp_path / "mlp"
    shutil.copytree(MLP, model_dir)
    x = features(300, seed=2)
    cols = [f"c{j}" for j in range(WIDTH)]
    df = spark.createDataFrame([(i, *map(float, x[i])) for i in range(len(x))], ["id", *cols]).repartition(2, "id")
    pipe = PipelineModel(stages=[VectorAssembler(inputCols=cols, outputCol="vec"),
                                 GotflowModel(modelPath=str(model_dir), inputCols=["vec"], argmaxCol="cls", batchSize=100)])
    before = predictions(pipe.transform(df).collect())
    path = str(tmp_path / "pipeline")
    pipe.write().overwrite().save(path)
    shutil.rmtree(model_dir)
    loaded = PipelineModel.load(path)
    stage = loaded.stages[1]
    assert isinstance(stage, GotflowModel)
    assert stage.getOrDefault("argmaxCol") == "cls"
    assert stage.getOrDefault("modelPath").startswith(path)
    out = loaded.transform(df).collect()
    after = predictions(out)
    assert before.keys() == after.keys()
    for k in before:
        assert np.array_equal(before[k], after[k])
    for r in out:
        assert r.cls == float(np.argmax(r.prediction))


def test_empty_input(spark):
    df = array_frame(spark, features(10)).where("id < 0")
    out = GotflowModel(modelPath=MLP, inputCols=["x"]).transform(df)
    assert out.count() == 0
    assert "prediction" in out.columns


@pytest.mark.parametrize("make,param,msg", [
    (lambda df: GotflowModel(modelPath=MLP, inputCols=["nope"]), "inputCols",
     "column 'nope' (for model input 'features' (float32[-1,32])) does not exist"),
    (lambda df: GotflowModel(modelPath=MLP, inputCols=["name"]), "inputCols",
     "column 'name' has type string; model input 'features' (float32[-1,32]) wants float32"),
    (lambda df: GotflowModel(modelPath=MLP, inputCols=["vec10"]), "inputCols",
     "column 'vec10' holds vectors of size 10, but model input 'features' (float32[-1,32]) wants 32 values a row"),
    (lambda df: GotflowModel(modelPath=MLP, inputMapping={"x": "pixels"}), "inputMapping",
     "the model has no input 'pixels'"),
    (lambda df: GotflowModel(modelPath=MLP, inputMapping={"x": " "}), "inputMapping",
     "column(s) 'x' map to no model input"),
    (lambda df: GotflowModel(modelPath=MLP, inputCols=["x"], outputMapping={"logits": "y"}), "outputMapping",
     "the model has no output 'logits'"),
    (lambda df: GotflowModel(modelPath=MLP, inputCols=["x"], predictionCol="id"), "predictionCol",
     "which the DataFrame already has"),
    (lambda df: GotflowModel(modelPath="/no/such/model", inputCols=["x"]), "modelPath",
     "modelPath '/no/such/model'"),
], ids=["missing column", "wrong dtype", "vector size", "unknown input", "blank input", "unknown output", "taken column", "bad path"])
def test_bad_input_is_named(spark, make, param, msg):
    x = features(20, seed=3)
    cols = [f"c{j}" for j in range(10)]
    df = spark.createDataFrame([(i, x[i].tolist(), "n", *map(float, x[i][:10])) for i in range(20)],
                               ["id", "x", "name", *cols])
    df = df.withColumn("x", F.col("x").cast("array<float>"))
    df = VectorAssembler(inputCols=cols, outputCol="vec10").transform(df)
    with pytest.raises(ValueError) as e:
        make(df).transform(df)
    assert msg in str(e.value)


def test_ragged_array_named_at_run_time(spark):
    """An array column whose rows have the wrong length fails the task with
    a message naming the column (there is no size in the schema to check)."""
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("x", T.ArrayType(T.FloatType()))])
    df = spark.createDataFrame([(0, [0.5] * WIDTH), (1, [0.5] * 7)], schema).coalesce(1)
    with pytest.raises(Exception) as e:
        GotflowModel(modelPath=MLP, inputCols=["x"]).transform(df).collect()
    assert "column 'x' has rows of 7 values, but model input 'features' wants 32 values a row" in str(e.value)
    assert not _wait_no_processes(30), "gotflow processes left behind"


def _wait_no_processes(timeout):
    """Waits until no gotflow_spark child is alive; returns those left."""
    end = time.monotonic() + timeout
    while True:
        left = gotflow_processes()
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def test_killed_process_fails_the_job(spark, gotflow, tmp_path):
    """SIGKILL to a task's gotflow process fails the job with the process's
    stderr in the error, and no gotflow process is left afterwards."""
    wrapper = tmp_path / "gotflow-wrapper"
    wrapper.write_text(f"#!/bin/sh\necho 'gotflow-wrapper: starting gotflow' >&2\nexec {gotflow} \"$@\"\n")
    wrapper.chmod(0o755)

    def endless(batches):
        """Rows without end (capped), so the gotflow processes are alive
        when the test kills one."""
        for b in batches:
            start = b.column(0)[0].as_py()
            x = np.random.RandomState(start).rand(2048 * WIDTH).astype(np.float32)
            arr = pa.ListArray.from_arrays(pa.array(np.arange(0, 2048 * WIDTH + 1, WIDTH, dtype=np.int32)), pa.array(x))
            for k in range(5000):
                yield pa.RecordBatch.from_arrays([pa.array(np.full(2048, start + k, np.int64)), arr], names=["id", "x"])

    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("x", T.ArrayType(T.FloatType()))])
    df = spark.range(0, 2, 1, 2).mapInArrow(endless, schema)
    model = GotflowModel(modelPath=MLP, inputCols=["x"], binary=str(wrapper))
    failure = []

    def run():
        try:
            # count the predictions, not the rows: Spark prunes a UDF whose
            # column the query never reads
            model.transform(df).agg(F.count("prediction")).collect()
        except Exception as e:  # the job must fail
            failure.append(e)

    assert not gotflow_processes()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    end = time.monotonic() + 120
    victims = []
    while not victims and time.monotonic() < end and t.is_alive():
        victims = gotflow_processes()
        time.sleep(0.05)
    assert victims, "no gotflow process appeared"
    os.kill(victims[0], signal.SIGKILL)
    t.join(timeout=180)
    assert not t.is_alive(), "the job did not end after its gotflow process was killed"
    assert failure, "the job succeeded although its gotflow process was killed"
    msg = str(failure[0])
    assert "killed by signal 9 (SIGKILL)" in msg
    assert "gotflow-wrapper: starting gotflow" in msg
    assert not _wait_no_processes(60), "gotflow processes left behind"


def test_input_mapping_options(spark):
    """inputMapping values take gotflow's --map options: a nullable array of
    doubles whose rows are longer or shorter than the input predicts as the
    fixed rows that fill, len, pad and cast make of it."""
    x = features(200, seed=3)
    rows, ref = [], []
    for i in range(len(x)):
        row = x[i].astype(np.float64).tolist()
        if i % 9 == 4:
            rows.append((i, None))
            ref.append(np.zeros(WIDTH, np.float32))
        elif i % 3 == 1:
            rows.append((i, row + [7.0, 7.0]))
            ref.append(x[i])
        elif i % 4 == 2:
            rows.append((i, row[:20]))
            ref.append(np.concatenate([x[i][:20], np.full(WIDTH - 20, 0.25, np.float32)]))
        else:
            rows.append((i, row))
            ref.append(x[i])
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("r", T.ArrayType(T.DoubleType()))])
    df = spark.createDataFrame(rows, schema).repartition(2, "id")
    got = GotflowModel(modelPath=MLP, inputMapping={"r": "features fill=0 len=32 pad=0.25 cast"}).transform(df)
    want = GotflowModel(modelPath=MLP, inputCols=["x"], predictionCol="want").transform(
        array_frame(spark, np.stack(ref), partitions=1))
    g = predictions(got.select("id", "prediction").collect())
    w = predictions(want.select("id", "want").collect(), "want")
    assert len(g) == 200 and set(g) == set(w)
    for i in g:
        assert np.array_equal(g[i], w[i]), i
