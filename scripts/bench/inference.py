#!/usr/bin/env python3
"""Python side of the batch-inference benchmark (bench/inference).

Reads one JSON request per line on stdin,
    {"name": ..., "model": SavedModel dir, "signature": "serving_default",
     "input": alias, "column": parquet column, "data": file.parquet,
     "batch": rows per call}
runs one timed pass for it and answers with one JSON line
    {"name": ..., "rows": rows per pass, "seconds": ..., "rows_per_s": ...}
Thread settings come from the command line. bench/inference drives it,
alternating Python and gotflow passes.

A pass is what a Python user would write for batch inference: read the
Parquet file with pyarrow, turn the column into one numpy array, call
tf.saved_model.load(model).signatures[key] on consecutive batches and fetch
every output as numpy. Each model is warmed up first; the best of several
passes is kept by the caller (gotflow's side is measured the same way).

    .venv/bin/python scripts/bench/inference.py --intra 2 --inter 2 < requests.jsonl
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402


def column_array(table, column):
    col = table.column(column).combine_chunks()
    width = col.type.list_size
    flat = col.values.to_numpy(zero_copy_only=False)
    return flat.reshape(-1, width)


def one_pass(fn, path, column, alias, batch):
    start = time.perf_counter()
    table = pq.read_table(path, columns=[column])
    x = column_array(table, column)
    n = x.shape[0]
    for off in range(0, n, batch):
        out = fn(**{alias: tf.constant(x[off:off + batch])})
        for v in out.values():
            v.numpy()
    return n, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--intra", type=int, default=0)
    ap.add_argument("--inter", type=int, default=0)
    args = ap.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    loaded = {}
    warm = set()
    # One request per line, one reply per line, so the caller can alternate
    # Python and gotflow passes and both see the same machine load.
    for line in sys.stdin:
        if not line.strip():
            continue
        r = json.loads(line)
        key = (r["model"], r["signature"])
        if key not in loaded:
            loaded[key] = tf.saved_model.load(r["model"]).signatures[r["signature"]]
        fn = loaded[key]
        if (key, r["batch"]) not in warm:
            table = pq.read_table(r["data"], columns=[r["column"]])
            x = column_array(table, r["column"])
            for _ in range(3):
                fn(**{r["input"]: tf.constant(x[:r["batch"]])})
            warm.add((key, r["batch"]))
        n, sec = one_pass(fn, r["data"], r["column"], r["input"], r["batch"])
        sys.stdout.write(json.dumps({"name": r["name"], "rows": n, "seconds": sec, "rows_per_s": n / sec}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
