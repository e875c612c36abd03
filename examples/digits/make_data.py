"""Write digits.parquet from scikit-learn's bundled copy of the UCI
handwritten digits (1797 8x8 images; no download).

Columns:
  pixels  fixed_size_list<float32>[64]  row-major 8x8 image, scaled to [0, 1]
  label   int32                          the digit, 0-9
  split   string                         "train" (80 %) or "heldout" (20 %),
                                         stratified by label, fixed seed

Run from the repository root:
    .venv/bin/python examples/digits/make_data.py
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    idx = np.arange(len(y))
    _, held = train_test_split(idx, test_size=0.2, stratify=y, random_state=20)
    split = np.full(len(y), "train", dtype=object)
    split[held] = "heldout"
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), 64)
    table = pa.table({"pixels": pixels, "label": pa.array(y, pa.int32()), "split": pa.array(split, pa.string())})
    path = os.path.join(HERE, "digits.parquet")
    tmp = path + ".tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    print(f"wrote {path}: {table.num_rows} rows, {int((split == 'train').sum())} train, {len(held)} held out")


if __name__ == "__main__":
    main()
