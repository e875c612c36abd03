#!/usr/bin/env python3
"""Python peer of the model-server benchmark (bench/serve).

What a Python team writes to serve a SavedModel without TF Serving:
tf.saved_model.load behind http.server's ThreadingHTTPServer, answering
TF Serving's REST predict request,

    POST /v1/models/<name>:predict  {"instances": [[...], ...]}
    -> {"predictions": [[...], ...]}

for the serving_default signature's single input and output. It binds
127.0.0.1 on a free port, prints "port N" on stdout once the model is
loaded and warmed up, and serves until stdin closes (so it dies with the
process that started it).

    .venv/bin/python scripts/bench/serve_baseline.py --model DIR --name mlp
"""

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--intra", type=int, default=0)
    ap.add_argument("--inter", type=int, default=0)
    args = ap.parse_args()
    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)

    model = tf.saved_model.load(args.model)
    fn = model.signatures["serving_default"]
    (in_name, in_spec), = fn.structured_input_signature[1].items()
    out_name = next(iter(fn.structured_outputs))
    dtype = in_spec.dtype.as_numpy_dtype
    width = in_spec.shape[1:]
    fn(**{in_name: tf.constant(np.zeros([1, *width], dtype=dtype))})  # warm up
    path = "/v1/models/%s:predict" % args.name

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as separate writes: without this, Nagle's
        # algorithm and the client's delayed ACK add 40 ms to each answer.
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_POST(self):
            if self.path != path:
                self.send_error(404)
                return
            n = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(n))
                x = np.asarray(body["instances"], dtype=dtype)
                y = fn(**{in_name: tf.constant(x)})[out_name].numpy()
                out = json.dumps({"predictions": y.tolist()}).encode()
                code = 200
            except Exception as e:  # the client sees the error, the server goes on
                out = json.dumps({"error": str(e)}).encode()
                code = 400
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # 64 clients connect at once

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("port %d" % server.server_address[1], flush=True)
    sys.stdin.read()  # until the parent goes
    server.shutdown()


if __name__ == "__main__":
    main()
