"""make demo's serving step: send held-out rows to `gotflow serve` as a TF
Serving REST client would, and compare the answers with what `gotflow
predict` wrote for the same rows.

    python scripts/demo_serve.py HOST:PORT MODEL PREDICTIONS.parquet OUTPUT_COLUMN ROWS
"""

import json
import sys
import urllib.request

import numpy as np
import pyarrow.parquet as pq


def main():
    addr, model, predictions, out_col, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    t = pq.read_table(predictions).slice(0, n)
    x = np.asarray(t["pixels"].combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)
    want = np.asarray(t[out_col].combine_chunks().flatten(), np.float32).reshape(t.num_rows, -1)
    body = json.dumps({"instances": x.tolist()}).encode()
    req = urllib.request.Request(f"http://{addr}/v1/models/{model}:predict", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        got = np.asarray(json.load(resp)["predictions"], np.float32)
    diff = float(np.max(np.abs(got - want)))
    print(f"{t.num_rows} held-out rows over TF Serving's REST API: max |served - gotflow predict| = {diff:.2e}")
    if diff != 0:
        sys.exit("the server's answers differ from gotflow predict's")


if __name__ == "__main__":
    main()
