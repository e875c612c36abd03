"""GotflowEstimator: data-parallel training of a gotflow bundle in one Spark
barrier stage."""

import json
import os
import secrets
import tempfile

from pyspark.ml import Estimator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import types as T

from ._binary import driver_settings, find_binary, ship_package
from ._spec import feed_column, inspect_model
from ._train import BarrierTrainer
from .model import GotflowModel, _GotflowParams

MODES = ("hogwild", "async-lock", "sync", "bounded-staleness")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adagrad", "rmsprop")


class GotflowEstimator(Estimator, _GotflowParams, DefaultParamsReadable, DefaultParamsWritable):
    """Trains a gotflow bundle (``gotflow convert``) on a DataFrame.

    ``fit(df)`` repartitions df into numWorkers partitions and runs one
    barrier stage (``mapInArrow(..., barrier=True)``): task 0 starts the
    parameter-server shards (``gotflow ps``) and hosts the coordinator,
    every task trains a ``gotflow worker`` on its own partition (spooled to
    a local Arrow IPC file), and the chief exports the SavedModel to
    exportDir, atomically. It returns a GotflowModel over that export; the
    epochs' losses are in ``lastMetrics``.
    """

    bundle = Param(Params._dummy(), "bundle", "model bundle directory (gotflow convert), readable on every executor",
                   typeConverter=TypeConverters.toString)
    inputCol = Param(Params._dummy(), "inputCol", "the feature column (vector or array) for a bundle with one input",
                     typeConverter=TypeConverters.toString)
    labelCol = Param(Params._dummy(), "labelCol", "the label column", typeConverter=TypeConverters.toString)
    inputOptions = Param(Params._dummy(), "inputOptions",
                         "how inputCol feeds the input, in gotflow's --map options: e.g. 'fill=0 len=784 cast' "
                         "for nulls and ragged arrays (empty: the column must fit as it is)",
                         typeConverter=TypeConverters.toString)
    labelOptions = Param(Params._dummy(), "labelOptions", "how labelCol feeds the label, as inputOptions (e.g. 'fill=0 cast')",
                         typeConverter=TypeConverters.toString)
    mode = Param(Params._dummy(), "mode", "update mode: " + ", ".join(MODES), typeConverter=TypeConverters.toString)
    numWorkers = Param(Params._dummy(), "numWorkers", "barrier tasks, one gotflow worker each",
                       typeConverter=TypeConverters.toInt)
    numPS = Param(Params._dummy(), "numPS", "parameter-server shards (run by task 0)", typeConverter=TypeConverters.toInt)
    epochs = Param(Params._dummy(), "epochs", "passes over the data (SparkFlow's iters)", typeConverter=TypeConverters.toInt)
    miniBatchSize = Param(Params._dummy(), "miniBatchSize", "rows per step and worker", typeConverter=TypeConverters.toInt)
    optimizer = Param(Params._dummy(), "optimizer", "optimizer: " + ", ".join(OPTIMIZERS),
                      typeConverter=TypeConverters.toString)
    optimizerOptions = Param(Params._dummy(), "optimizerOptions", "more optimizer settings as JSON, e.g. {\"beta_1\": 0.8}",
                             typeConverter=TypeConverters.toString)
    learningRate = Param(Params._dummy(), "learningRate", "learning rate (0: the optimizer's Keras default)",
                         typeConverter=TypeConverters.toFloat)
    seed = Param(Params._dummy(), "seed", "seed for shuffling", typeConverter=TypeConverters.toInt)
    exportDir = Param(Params._dummy(), "exportDir", "where the chief exports the model (the driver must read it; "
                      "default: a new temporary directory)", typeConverter=TypeConverters.toString)
    timeout = Param(Params._dummy(), "timeout", "seconds a worker may train before the stage fails",
                    typeConverter=TypeConverters.toInt)

    def __init__(self, bundle=None, inputCol=None, labelCol="label", inputOptions="", labelOptions="", mode="hogwild", numWorkers=2, numPS=1, epochs=10,
                 miniBatchSize=32, optimizer="adam", optimizerOptions="", learningRate=0.0, seed=1, exportDir="",
                 timeout=3600, predictionCol="prediction", argmaxCol="", batchSize=1024, binary="", threads=0):
        super().__init__()
        self._setDefault(bundle="", inputCol="", labelCol="label", inputOptions="", labelOptions="", mode="hogwild", numWorkers=2, numPS=1, epochs=10,
                         miniBatchSize=32, optimizer="adam", optimizerOptions="", learningRate=0.0, seed=1,
                         exportDir="", timeout=3600)
        kwargs = dict(bundle=bundle, inputCol=inputCol, labelCol=labelCol, inputOptions=inputOptions,
                      labelOptions=labelOptions, mode=mode, numWorkers=numWorkers, numPS=numPS,
                      epochs=epochs, miniBatchSize=miniBatchSize, optimizer=optimizer,
                      optimizerOptions=optimizerOptions, learningRate=learningRate, seed=seed, exportDir=exportDir,
                      timeout=timeout, predictionCol=predictionCol, argmaxCol=argmaxCol, batchSize=batchSize,
                      binary=binary, threads=threads)
        self._set(**{k: v for k, v in kwargs.items() if v is not None})
        self.lastMetrics = []

    def setParams(self, **kwargs):
        """Sets params by name."""
        return self._set(**kwargs)

    def _check(self, spark):
        """Preflight checks, each with what to change."""
        get = self.getOrDefault
        if get(self.mode) not in MODES:
            raise ValueError(f"mode {get(self.mode)!r} is not an update mode; want one of {', '.join(MODES)}")
        if get(self.optimizer) not in OPTIMIZERS:
            raise ValueError(f"optimizer {get(self.optimizer)!r} is unknown; want one of {', '.join(OPTIMIZERS)}")
        if get(self.optimizerOptions):
            try:
                opts = json.loads(get(self.optimizerOptions))
                assert isinstance(opts, dict)
            except Exception:
                raise ValueError(f"optimizerOptions {get(self.optimizerOptions)!r} is not a JSON object") from None
        for name in ("numWorkers", "numPS", "epochs", "miniBatchSize", "timeout"):
            if get(getattr(self, name)) < 1:
                raise ValueError(f"{name} {get(getattr(self, name))}: want >= 1")
        if not get(self.bundle):
            raise ValueError("bundle is not set (a directory written by `gotflow convert`)")
        conf = spark.sparkContext.getConf()
        if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
            raise RuntimeError("GotflowEstimator runs a barrier stage, which Spark refuses under dynamic allocation: "
                               "set spark.dynamicAllocation.enabled=false for this application")
        slots = spark.sparkContext.defaultParallelism // max(1, int(conf.get("spark.task.cpus", "1")))
        if slots < get(self.numWorkers):
            raise RuntimeError(f"numWorkers {get(self.numWorkers)} needs that many barrier tasks at once, but the "
                               f"cluster has {slots} task slots (defaultParallelism / spark.task.cpus): lower numWorkers "
                               "or add executors")

    def _fit(self, dataset):
        spark = dataset.sparkSession
        self._check(spark)
        get = self.getOrDefault
        settings = driver_settings(spark, get(self.binary) or None)
        find_binary(settings["binary"])  # the driver reads the bundle and the export with it too
        bundle = os.path.abspath(get(self.bundle))
        with open(os.path.join(bundle, "manifest.json")) as f:
            manifest = json.load(f)
        spec = inspect_model(bundle, binary=settings["binary"], library_path=settings["library_path"])
        if len(spec.inputs) != 1:
            raise ValueError(f"bundle {bundle} has {len(spec.inputs)} inputs; GotflowEstimator feeds one (inputCol)")
        labels = manifest.get("labels") or []
        if len(labels) != 1:
            raise ValueError(f"bundle {bundle} has {len(labels)} labels; GotflowEstimator feeds one (labelCol)")
        inp, label = spec.inputs[0], labels[0]
        input_col = get(self.inputCol) or inp.name
        label_col = get(self.labelCol)
        from ._spec import TensorSpec

        label_spec = TensorSpec(label)
        in_opts, label_opts = get(self.inputOptions).strip(), get(self.labelOptions).strip()
        feats = feed_column(dataset, input_col, inp, "inputCol", loose=bool(in_opts))
        lab = feed_column(dataset, label_col, label_spec, "labelCol", loose=bool(label_opts))
        n = get(self.numWorkers)
        data = dataset.select(feats.alias(inp.name), lab.alias(label_spec.name)).repartition(n)
        export = get(self.exportDir) or tempfile.mkdtemp(prefix="gotflow-export-")
        export = os.path.abspath(export)
        opt = {"optimizer": get(self.optimizer)}
        if get(self.learningRate):
            opt["learning_rate"] = get(self.learningRate)
        if get(self.optimizerOptions):
            opt.update(json.loads(get(self.optimizerOptions)))
        train_args = ["--bundle", bundle, "--epochs", str(get(self.epochs)), "--batch-size", str(get(self.miniBatchSize)),
                      "--mode", get(self.mode), "--optimizer", get(self.optimizer), "--seed", str(get(self.seed)),
                      "--export", export, "--ps", str(get(self.numPS))]
        if get(self.learningRate):
            train_args += ["--lr", str(get(self.learningRate))]
        if get(self.optimizerOptions):
            train_args += ["--optimizer-options", get(self.optimizerOptions)]
        if get(self.threads):
            train_args += ["--threads", str(get(self.threads))]
        if in_opts:
            train_args += ["--map", f"{inp.name}={inp.name} {in_opts}"]
        if label_opts:
            train_args += ["--label", f"{label_spec.name}={label_spec.name} {label_opts}"]
        cfg = {"binary": settings["binary"], "library_path": settings["library_path"], "num_workers": n,
               "num_ps": get(self.numPS), "mode": get(self.mode), "optimizer_json": json.dumps(opt),
               "train_args": train_args, "token": secrets.token_hex(16), "timeout": get(self.timeout)}
        ship_package()
        schema = T.StructType([T.StructField("rank", T.IntegerType()), T.StructField("rows", T.LongType()),
                               T.StructField("metrics", T.StringType())])
        results = data.mapInArrow(BarrierTrainer(cfg), schema, barrier=True).collect()
        chief = next(r for r in results if r.rank == 0)
        self.lastMetrics = json.loads(chief.metrics)
        if in_opts:
            model = GotflowModel(modelPath=os.path.join(export, "saved_model"),
                                 inputMapping={input_col: f"{inp.name} {in_opts}"})
        else:
            model = GotflowModel(modelPath=os.path.join(export, "saved_model"), inputCols=[input_col])
        for p in ("predictionCol", "argmaxCol", "batchSize", "binary", "threads"):
            model._set(**{p: get(getattr(self, p))})
        return model
