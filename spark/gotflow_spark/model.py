"""GotflowModel: batch inference over a Spark DataFrame with the gotflow
binary."""

import json
import os
import shutil

from pyspark.ml import Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_type

from ._binary import driver_settings, ship_package
from ._infer import PartitionPredictor
from ._spec import feed_column, inspect_model


def _to_mapping(value):
    """TypeConverter for str -> str mappings (a dict or its JSON)."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError(f"want a dict of str to str, got {value!r}")
    return dict(value)


class _GotflowParams(Params):
    """Params shared by GotflowModel and GotflowEstimator."""

    binary = Param(Params._dummy(), "binary",
                   "path of the gotflow executable on the executors (default: spark.gotflow.binary, "
                   "$GOTFLOW_BIN, a file shipped with SparkContext.addFile, gotflow on PATH)",
                   typeConverter=TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "rows per model run", typeConverter=TypeConverters.toInt)
    inputCols = Param(Params._dummy(), "inputCols",
                      "columns feeding the model's inputs, in the order `gotflow inspect --json` lists them",
                      typeConverter=TypeConverters.toListString)
    inputMapping = Param(Params._dummy(), "inputMapping",
                         "column -> model input, optionally followed by gotflow's --map options, e.g. "
                         "{'pixels': 'x shape=28,28,1 fill=0 len=784 cast'} (overrides inputCols)",
                         typeConverter=_to_mapping)
    predictionCol = Param(Params._dummy(), "predictionCol",
                          "column for the model's output when it has one and outputMapping is empty",
                          typeConverter=TypeConverters.toString)
    outputMapping = Param(Params._dummy(), "outputMapping", "model output -> column", typeConverter=_to_mapping)
    argmaxCol = Param(Params._dummy(), "argmaxCol",
                      "if set, a double column with the index of the largest value of the prediction "
                      "(a class index, for MulticlassClassificationEvaluator)",
                      typeConverter=TypeConverters.toString)
    threads = Param(Params._dummy(), "threads", "TensorFlow intra-op threads per task (0: the task's CPUs)",
                    typeConverter=TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(binary="", batchSize=1024, inputCols=[], inputMapping={}, predictionCol="prediction",
                         outputMapping={}, argmaxCol="", threads=0)


class GotflowModel(Model, _GotflowParams, MLReadable, MLWritable):
    """A TensorFlow model (SavedModel, frozen graph, checkpoint or gotflow
    bundle) applied to a DataFrame by the gotflow binary.

    ``transform(df)`` adds the model's outputs as columns through a scalar
    iterator Arrow UDF (``pyspark.sql.functions.arrow_udf``) over the feed
    columns only: each task runs one ``gotflow predict --ipc --outputs-only``
    process, streams it the feed columns as an Arrow IPC stream and returns
    just the outputs it streams back, which Spark joins to the rows. Several
    outputs (and ``argmaxCol``) come back as one struct, split into their
    columns, so the model runs once per row. Feed columns may be Spark ML
    vectors (dense or sparse, converted in the JVM), arrays of numbers,
    numbers or strings.
    """

    modelPath = Param(Params._dummy(), "modelPath", "the model gotflow loads (a path every executor can read)",
                      typeConverter=TypeConverters.toString)
    tags = Param(Params._dummy(), "tags", "comma-separated SavedModel tag set (default serve)",
                 typeConverter=TypeConverters.toString)
    signature = Param(Params._dummy(), "signature", "SavedModel signature key (default serving_default)",
                      typeConverter=TypeConverters.toString)

    def __init__(self, modelPath=None, tags="", signature="", inputCols=None, inputMapping=None, predictionCol="prediction",
                 outputMapping=None, argmaxCol="", batchSize=1024, binary="", threads=0):
        super().__init__()
        self._setDefault(tags="", signature="")
        kwargs = {k: v for k, v in dict(modelPath=modelPath, tags=tags, signature=signature, inputCols=inputCols,
                                        inputMapping=inputMapping, predictionCol=predictionCol,
                                        outputMapping=outputMapping, argmaxCol=argmaxCol, batchSize=batchSize,
                                        binary=binary, threads=threads).items() if v is not None}
        self._set(**kwargs)

    def setParams(self, **kwargs):
        """Sets params by name."""
        return self._set(**kwargs)

    # -- planning --------------------------------------------------------

    def spec(self, spark=None):
        """The model's inputs and outputs, as ``gotflow inspect --json``
        reports them (run on the driver)."""
        spark = spark or SparkSession.getActiveSession()
        if not self.isDefined(self.modelPath) or not self.getOrDefault(self.modelPath):
            raise ValueError("GotflowModel: param modelPath is not set")
        settings = driver_settings(spark, self.getOrDefault(self.binary) or None)
        return inspect_model(self.getOrDefault(self.modelPath), self.getOrDefault(self.tags),
                             self.getOrDefault(self.signature), settings["binary"], settings["library_path"])

    def _feeds(self, df, spec):
        """[(column, model input spec, param name)] for every model input."""
        mapping = self.getOrDefault(self.inputMapping)
        cols = self.getOrDefault(self.inputCols)
        if mapping:
            # "x fill=0 len=784": the input, then options in --map's syntax.
            blank = [col for col, value in mapping.items() if not value.strip()]
            if blank:
                raise ValueError(f"inputMapping: column(s) {', '.join(map(repr, blank))} map to no model input; "
                                 "want {column: 'input [--map options]'}")
            parsed = {col: (value.split(None, 1) + [""])[:2] for col, value in mapping.items()}
            for col, (name, _) in parsed.items():
                spec.input(name)
            fed = {name for name, _ in parsed.values()}
            missing = [s.name for s in spec.inputs if s.name not in fed]
            if missing:
                raise ValueError(f"inputMapping: model input(s) {', '.join(missing)} not mapped from any column "
                                 f"(inputMapping maps {mapping})")
            return [(col, spec.input(name), "inputMapping", opts.strip()) for col, (name, opts) in parsed.items()]
        if cols:
            if len(cols) != len(spec.inputs):
                raise ValueError(f"inputCols: {len(cols)} column(s) {cols} for {len(spec.inputs)} model input(s) "
                                 f"{', '.join(s.describe() for s in spec.inputs)}; give one column per input")
            return [(col, s, "inputCols", "") for col, s in zip(cols, spec.inputs)]
        return [(s.name, s, "inputCols (unset: each input from the column of its name)", "") for s in spec.inputs]

    def _outputs(self, df, spec):
        """[(model output spec, column)]."""
        mapping = self.getOrDefault(self.outputMapping)
        if mapping:
            return [(spec.output(name), col) for name, col in mapping.items()]
        if len(spec.outputs) == 1:
            return [(spec.outputs[0], self.getOrDefault(self.predictionCol))]
        return [(s, s.name) for s in spec.outputs]

    def _transform(self, dataset):
        spark = dataset.sparkSession
        spec = self.spec(spark)
        batch = self.getOrDefault(self.batchSize)
        if batch <= 0:
            raise ValueError(f"batchSize {batch}: want > 0")
        feeds = self._feeds(dataset, spec)
        outputs = self._outputs(dataset, spec)
        names = set(dataset.columns)
        for out, col in outputs:
            if col in names:
                raise ValueError(f"output {out.name!r} would become column {col!r}, which the DataFrame already has; "
                                 "set predictionCol or outputMapping to another name")
        argmax = self.getOrDefault(self.argmaxCol)
        argmax_cfg = None
        if argmax:
            if argmax in names or argmax in [c for _, c in outputs]:
                raise ValueError(f"argmaxCol {argmax!r} is already a column")
            src_out, src_col = outputs[0] if len(outputs) == 1 else next(
                ((o, c) for o, c in outputs if c == self.getOrDefault(self.predictionCol)), (None, None))
            if src_out is None:
                raise ValueError("argmaxCol needs a single output, or one mapped to predictionCol")
            if src_out.width() is None or src_out.shape is None or len(src_out.shape) != 2 or \
                    src_out.dtype not in ("float32", "float64"):
                raise ValueError(f"argmaxCol: output {src_out.describe()} is not a [batch, classes] float tensor")
            argmax_cfg = (argmax, src_col, src_out.width())
        exprs, feed_cfg = [], []
        for i, (col, s, param, opts) in enumerate(feeds):
            # With --map options, gotflow converts the column (nulls, ragged
            # rows, casts): it goes as it is, vectors as arrays of doubles.
            exprs.append(feed_column(dataset, col, s, param, loose=bool(opts)))
            feed_cfg.append((f"__gotflow_feed_{i}", s.name, col,
                             s.width() if s.shape is not None and len(s.shape) == 2 and not opts else None, opts))
        # What the UDF returns: the single output as is, else a struct of
        # the outputs (fields _0, _1, ...) followed by the argmax.
        results = [(f"_{k}", col, out.spark_type(col)) for k, (out, col) in enumerate(outputs)]
        if argmax_cfg:
            results.append((f"_{len(results)}", argmax, T.DoubleType()))
        if len(results) == 1:
            return_type = results[0][2]
        else:
            return_type = T.StructType([T.StructField(f, t, nullable=True) for f, _, t in results])
        out_cfg = [(o.name, f"__gotflow_out_{k}", o.arrow_type()) for k, (o, _) in enumerate(outputs)]
        settings = driver_settings(spark, self.getOrDefault(self.binary) or None)
        cfg = {
            "binary": settings["binary"], "library_path": settings["library_path"],
            "model": os.path.abspath(self.getOrDefault(self.modelPath)) if "://" not in self.getOrDefault(self.modelPath)
            else self.getOrDefault(self.modelPath),
            "tags": self.getOrDefault(self.tags), "signature": self.getOrDefault(self.signature),
            "batch_size": batch, "threads": self.getOrDefault(self.threads), "feeds": feed_cfg,
            "outputs": out_cfg,
            "argmax": ([c for _, c in outputs].index(argmax_cfg[1]), argmax_cfg[2]) if argmax_cfg else None,
            "result_type": to_arrow_type(return_type, timezone="UTC"),
        }
        try:
            from pyspark.sql.functions import arrow_udf
        except ImportError:
            import pyspark

            raise RuntimeError(f"GotflowModel.transform needs pyspark >= 4.1 (pyspark.sql.functions.arrow_udf); "
                               f"this is pyspark {pyspark.__version__}") from None
        ship_package()
        predict = arrow_udf(PartitionPredictor(cfg).udf_function(), return_type)
        if len(results) == 1:
            return dataset.select("*", predict(*exprs).alias(results[0][1]))
        temp = "__gotflow_result"
        while temp in names:
            temp += "_"
        both = dataset.select("*", predict(*exprs).alias(temp))
        return both.select("*", *[F.col(temp).getField(f).alias(col) for f, col, _ in results]).drop(temp)

    # -- persistence -----------------------------------------------------

    def write(self):
        """A writer that saves the params and, for local paths, a copy of the
        model directory (so the saved model does not depend on modelPath)."""
        return _ModelWriter(self)

    @classmethod
    def read(cls):
        """The reader of write()'s output."""
        return _ModelReader(cls)


class _ModelWriter(MLWriter):
    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path):
        src = self.instance.getOrDefault(self.instance.modelPath)
        extra = {}
        local = _local_path(path)
        if local is not None and src and _local_path(src) is not None and os.path.exists(_local_path(src)):
            dst = os.path.join(local, "model")
            tmp = dst + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            s = _local_path(src)
            if os.path.isdir(s):
                shutil.copytree(s, tmp)
            else:
                os.makedirs(tmp)
                shutil.copy2(s, os.path.join(tmp, os.path.basename(s)))
                extra["modelFile"] = os.path.basename(s)
            shutil.rmtree(dst, ignore_errors=True)
            os.rename(tmp, dst)
            extra["copied"] = True
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession, extraMetadata=extra)


class _ModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path):
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        instance = self.cls()
        DefaultParamsReader.getAndSetParams(instance, metadata)
        local = _local_path(path)
        if metadata.get("copied") and local is not None:
            model = os.path.join(local, "model")
            if metadata.get("modelFile"):
                model = os.path.join(model, metadata["modelFile"])
            instance._set(modelPath=model)
        instance._resetUid(metadata["uid"])
        return instance


def _local_path(path):
    """The local filesystem path of path (plain or file:), else None."""
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("file:"):
        return path[len("file:"):]
    if "://" in path:
        return None
    return os.path.abspath(path)
