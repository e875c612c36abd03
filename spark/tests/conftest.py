"""One local[2] SparkSession for the whole test run, the gotflow binary, and
helpers shared by the tests."""

import os
import subprocess
import sys
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Every process this test run starts (the JVM, Python workers, gotflow
# children) inherits this mark, so that the leak checks count only this
# run's processes and not those of another Spark job on the machine.
SESSION = uuid.uuid4().hex
os.environ["GOTFLOW_TEST_SESSION"] = SESSION
sys.path.insert(0, os.path.join(ROOT, "spark"))


def gotflow_binary():
    """The gotflow binary under test: $GOTFLOW_BIN or the checkout's
    bin/gotflow (`make build`)."""
    b = os.environ.get("GOTFLOW_BIN") or os.path.join(ROOT, "bin", "gotflow")
    if not os.access(b, os.X_OK):
        pytest.exit(f"{b} is missing: run `make build` (make test-python does) or set GOTFLOW_BIN", returncode=1)
    return b


@pytest.fixture(scope="session")
def gotflow():
    return gotflow_binary()


@pytest.fixture(scope="session")
def spark(gotflow, tmp_path_factory):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from pyspark.sql import SparkSession

    warehouse = tmp_path_factory.mktemp("warehouse")
    s = (SparkSession.builder.master("local[2]").appName("gotflow_spark tests")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "2")
         .config("spark.sql.warehouse.dir", str(warehouse))
         .config("spark.driver.memory", "1g")
         .config("spark.gotflow.binary", gotflow)
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def gotflow_processes():
    """pids of live gotflow processes started by gotflow_spark in this test
    run (they carry GOTFLOW_SPARK_TASK and this run's mark in their
    environment)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"GOTFLOW_SPARK_TASK=" in env and b"GOTFLOW_TEST_SESSION=" + SESSION.encode() in env and state != "Z":
            pids.append(int(d))
    return pids


def run_predict(gotflow, model, table, batch_size, tmp_path, extra=()):
    """`gotflow predict` over a pyarrow Table written to a Parquet file;
    returns the output file's Table."""
    import pyarrow.parquet as pq

    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(table, src)
    p = subprocess.run([gotflow, "predict", "--model", model, "--data", str(src), "--output", str(out),
                        "--batch-size", str(batch_size), "--quiet", *extra], capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    return pq.read_table(out)
