#!/usr/bin/env python3
"""Python side of the Spark benchmark (bench/spark).

On one local SparkSession, over the same cached DataFrame, measures rows/s of

* gotflow: ``GotflowModel(modelPath=...).transform(df)`` (a scalar
  iterator ``arrow_udf`` over the feed column, one ``gotflow predict --ipc``
  child per task, only the predictions sent back to the JVM), and
* the peer: ``pyspark.ml.functions.predict_batch_udf`` whose
  ``make_predict_fn`` loads the same SavedModel with ``tf.saved_model.load``
  (once per Python worker) and calls its serving signature,

both at the same batch size and TensorFlow intra-op threads. Each pass
writes the whole result (input column and predictions) to Spark's ``noop``
sink, so every prediction is computed. After one warm-up pass per side the
two sides' predictions are compared row by row (the run fails when they
differ by more than --tolerance), then gotflow and peer passes alternate and
the best of each is kept.

The results go to --result as JSON:
    {"spark": version, "tensorflow": version, "runs": [{"name", "model",
     "rows", "width", ..., "gotflow_rows_per_s", "peer_rows_per_s",
     "gotflow_passes", "peer_passes", "max_abs_diff"}]}
Progress goes to stderr.

    .venv/bin/python scripts/bench/spark_transform.py --binary bin/gotflow --result /tmp/spark.json
"""

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "spark"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

MODELS = {
    # name: (fixture directory, input, width, output, classes, data)
    "mlp": ("mlp_savedmodel", "features", 32, "output_0", 10, "normal"),
    "cnn": ("cnn_savedmodel", "pixels", 784, "output_0", 10, "uniform"),
}


def log(msg):
    sys.stderr.write(f"spark_transform: {msg}\n")
    sys.stderr.flush()


def make_data(spark, column, width, rows, kind, seed, partitions):
    """A cached DataFrame of one array<float> column: rows seeded float32
    vectors of width values (standard normal, or uniform in [0, 1))."""
    from pyspark.sql import types as T

    rng = np.random.default_rng(seed)
    if kind == "uniform":
        x = rng.random((rows, width), dtype=np.float32)
    else:
        x = rng.standard_normal((rows, width), dtype=np.float32)
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    col = pa.ListArray.from_arrays(offsets, pa.array(x.ravel()))
    table = pa.Table.from_arrays([col], names=[column])
    schema = T.StructType([T.StructField(column, T.ArrayType(T.FloatType(), containsNull=True), nullable=True)])
    df = spark.createDataFrame(table, schema=schema)
    if df.rdd.getNumPartitions() != partitions:
        df = df.repartition(partitions)
    df = df.cache()
    n = df.count()
    if n != rows:
        raise RuntimeError(f"the cached DataFrame holds {n} rows, want {rows}")
    return df


def peer_udf(model_dir, input_name, output_name, width, batch, threads):
    """predict_batch_udf over the SavedModel in Python TensorFlow."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import types as T

    def make_predict_fn():
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already initialised in this worker
            if tf.config.threading.get_intra_op_parallelism_threads() != threads:
                raise
        fn = tf.saved_model.load(model_dir).signatures["serving_default"]

        def predict(x):
            return fn(**{input_name: tf.constant(x, dtype=tf.float32)})[output_name].numpy()

        return predict

    return predict_batch_udf(make_predict_fn, return_type=T.ArrayType(T.FloatType()), batch_size=batch,
                             input_tensor_shapes=[[width]])


def timed(df):
    t0 = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t0


def compare(ours, peer_fn, column, classes):
    """Max |gotflow - peer| over every prediction value, and the number of
    rows whose predictions are missing or of the wrong size."""
    from pyspark.sql import functions as F

    both = ours.withColumn("peer", peer_fn(column))
    bad = F.col("prediction").isNull() | F.col("peer").isNull() | (F.size("prediction") != classes) | \
        (F.size("peer") != classes)
    diff = F.array_max(F.zip_with("prediction", "peer", lambda a, b: F.abs(a - b)))
    row = both.agg(F.count(F.lit(1)).alias("rows"), F.sum(F.when(bad, 1).otherwise(0)).alias("bad"),
                   F.max(diff).alias("max_abs_diff")).collect()[0]
    return row["rows"], row["bad"], row["max_abs_diff"]


def run_model(spark, args, name):
    from gotflow_spark import GotflowModel

    fixture, input_name, width, output_name, classes, kind = MODELS[name]
    model_dir = os.path.join(ROOT, "scripts", "fixtures", fixture)
    rows = args.mlp_rows if name == "mlp" else args.cnn_rows
    label = f"spark/transform/{name}/batch{args.batch}"
    log(f"{label}: generating {rows} rows x {width} float32 ({kind}, seed {args.seed})")
    df = make_data(spark, input_name, width, rows, kind, args.seed, args.partitions)

    gm = GotflowModel(modelPath=model_dir, inputCols=[input_name], predictionCol="prediction",
                      batchSize=args.batch, threads=args.threads, binary=args.binary)
    spec = gm.spec(spark)
    ins = [(s.name, s.dtype, s.shape) for s in spec.inputs]
    outs = [(s.name, s.dtype, s.shape) for s in spec.outputs]
    if ins != [(input_name, "float32", [-1, width])] or outs != [(output_name, "float32", [-1, classes])]:
        raise RuntimeError(f"{model_dir}: gotflow inspect says inputs {ins}, outputs {outs}; want "
                           f"{input_name} float32 [-1,{width}] -> {output_name} float32 [-1,{classes}]")
    udf = peer_udf(model_dir, input_name, output_name, width, args.batch, args.threads)
    ours = gm.transform(df)
    theirs = df.withColumn("prediction", udf(input_name))

    warm_g = timed(ours)
    warm_p = timed(theirs)
    log(f"{label}: warm-up gotflow {rows / warm_g:.0f} rows/s, predict_batch_udf {rows / warm_p:.0f} rows/s")

    n, bad, max_diff = compare(ours, udf, input_name, classes)
    if n != rows or bad:
        raise RuntimeError(f"{label}: comparison saw {n} rows ({rows} expected), {bad} with a missing or "
                           f"wrongly sized prediction")
    if max_diff is None or not max_diff <= args.tolerance:
        raise RuntimeError(f"{label}: gotflow and predict_batch_udf disagree: max |delta| = {max_diff} > "
                           f"{args.tolerance}")
    log(f"{label}: predictions agree, max |delta| = {max_diff:.3g} over {n} rows x {classes}")

    g_passes, p_passes = [], []
    for i in range(args.repeats):
        g_passes.append(rows / timed(ours))
        p_passes.append(rows / timed(theirs))
        log(f"{label}: pass {i + 1}/{args.repeats}: gotflow {g_passes[-1]:.0f} rows/s, "
            f"predict_batch_udf {p_passes[-1]:.0f} rows/s")
    df.unpersist(blocking=True)
    return {
        "name": label, "model": fixture, "input": input_name, "width": width, "data": kind, "rows": rows,
        "partitions": args.partitions, "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
        "gotflow_rows_per_s": max(g_passes), "peer_rows_per_s": max(p_passes),
        "gotflow_passes": g_passes, "peer_passes": p_passes, "max_abs_diff": max_diff,
        "warmup_gotflow_rows_per_s": rows / warm_g, "warmup_peer_rows_per_s": rows / warm_p,
    }


def tf_version():
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True, help="the gotflow executable")
    ap.add_argument("--result", required=True, help="where to write the JSON results")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--mlp-rows", type=int, default=200_000)
    ap.add_argument("--cnn-rows", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads per task, both sides")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--seed", type=int, default=20240501)
    ap.add_argument("--tolerance", type=float, default=1e-5)
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r} (have {', '.join(MODELS)})")

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    import pyspark

    with tempfile.TemporaryDirectory(prefix="gotflow-bench-spark-") as tmp:
        spark = (SparkSession.builder.master(args.master).appName("gotflow bench/spark")
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .config("spark.driver.memory", "2g")
                 .config("spark.sql.shuffle.partitions", str(args.partitions))
                 .config("spark.sql.warehouse.dir", os.path.join(tmp, "warehouse"))
                 .config("spark.local.dir", tmp)
                 .config("spark.python.worker.reuse", "true")
                 .config("spark.gotflow.binary", args.binary)
                 .getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        try:
            runs = [run_model(spark, args, m) for m in models]
            arrow_batch = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
        finally:
            spark.stop()

    doc = {"spark": pyspark.__version__, "tensorflow": tf_version(), "master": args.master,
           "arrow_max_records_per_batch": int(arrow_batch), "runs": runs}
    with open(args.result, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
