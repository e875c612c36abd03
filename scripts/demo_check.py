"""make demo's last step: load the SavedModel gotflow exported with Python
TensorFlow, run it on the rows gotflow predicted, and compare.

    python scripts/demo_check.py SAVED_MODEL PREDICTIONS.parquet OUTPUT_COLUMN LABEL_COLUMN
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402


def main():
    saved_model, predictions, out_col, label_col = sys.argv[1:5]
    t = pq.read_table(predictions)
    x = np.asarray(t["pixels"].combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)
    ours = np.asarray(t[out_col].combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)
    labels = np.asarray(t[label_col], np.int64)
    fn = tf.saved_model.load(saved_model).signatures["serving_default"]
    theirs = list(fn(pixels=tf.constant(x)).values())[0].numpy()
    diff = float(np.max(np.abs(ours - theirs)))
    acc = float(np.mean(np.argmax(ours, 1) == labels))
    print(f"held-out accuracy (gotflow predict): {acc:.4f} on {t.num_rows} rows")
    print(f"Python tf.saved_model.load on the exported model: max |gotflow - python| = {diff:.2e}")
    if diff > 1e-5:
        sys.exit("predictions differ from Python TensorFlow's")
    if acc < 0.95:
        sys.exit(f"held-out accuracy {acc:.4f} is below 0.95")


if __name__ == "__main__":
    main()
