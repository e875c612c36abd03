"""Finding the gotflow binary and the environment it runs in.

The binary is looked up, in order, from:

1. an explicit path (the ``binary`` param of GotflowModel/GotflowEstimator);
2. the Spark conf ``spark.gotflow.binary`` (read on the driver, carried to
   the executors with the task);
3. the ``GOTFLOW_BIN`` environment variable (of the process looking);
4. a file named ``gotflow`` distributed with ``SparkContext.addFile``;
5. ``gotflow`` on ``PATH``.

libtensorflow's directory reaches the child through ``LD_LIBRARY_PATH``: the
conf ``spark.gotflow.libraryPath`` (or ``GOTFLOW_LIBRARY_PATH``) is prepended
to the executor's own. A binary built by ``make build`` carries an rpath to
``third_party/libtensorflow/lib`` and needs neither on the machine it was
built on.
"""

import os
import shutil
import socket

CONF_BINARY = "spark.gotflow.binary"
CONF_LIBRARY_PATH = "spark.gotflow.libraryPath"
ENV_BINARY = "GOTFLOW_BIN"
ENV_LIBRARY_PATH = "GOTFLOW_LIBRARY_PATH"


class BinaryNotFoundError(RuntimeError):
    """The gotflow executable could not be found (or is not executable)."""


def driver_settings(spark, binary=None):
    """The binary and library path to ship to the executors, from the
    explicit value or the session's conf (None when unset)."""
    conf = spark.sparkContext.getConf()
    return {
        "binary": binary or conf.get(CONF_BINARY, None),
        "library_path": conf.get(CONF_LIBRARY_PATH, None),
    }


def _executable(path):
    return path and os.path.isfile(path) and os.access(path, os.X_OK)


def find_binary(binary=None):
    """Returns the path of the gotflow executable on this machine, or raises
    BinaryNotFoundError saying where it looked and how to provide it."""
    tried = []
    if binary:
        if _executable(binary):
            return binary
        tried.append(f"{binary} (param binary or {CONF_BINARY})")
    env = os.environ.get(ENV_BINARY)
    if env:
        if _executable(env):
            return env
        tried.append(f"{env} (${ENV_BINARY})")
    try:
        from pyspark import SparkFiles

        shipped = SparkFiles.get("gotflow")
        if _executable(shipped):
            return shipped
        tried.append(f"{shipped} (SparkContext.addFile)")
    except Exception:  # no SparkFiles root in this process
        pass
    on_path = shutil.which("gotflow")
    if on_path:
        return on_path
    tried.append("gotflow on PATH")
    raise BinaryNotFoundError(
        f"gotflow binary not found on host {socket.gethostname()}: tried "
        + "; ".join(tried)
        + f". Build it with `make build` (bin/gotflow) and set the Spark conf {CONF_BINARY} "
        f"to its path on every executor, or set ${ENV_BINARY} in the executors' environment "
        "(spark.executorEnv.GOTFLOW_BIN), or ship it with spark.sparkContext.addFile(path_to_gotflow)."
    )


def child_env(library_path=None, extra=None):
    """The environment of a gotflow child: this process's, with the
    libtensorflow directory prepended to LD_LIBRARY_PATH and TensorFlow's
    info logs off."""
    env = dict(os.environ)
    lib = library_path or env.get(ENV_LIBRARY_PATH)
    if lib:
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = lib + (":" + old if old else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if extra:
        env.update(extra)
    return env


def ship_package():
    """Makes cloudpickle send gotflow_spark's code with the tasks, so that
    the executors need pyspark and pyarrow but not this package."""
    import sys

    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__.rpartition(".")[0]])
