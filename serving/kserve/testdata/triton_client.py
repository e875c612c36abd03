"""Talks to a gotflow server's Open Inference Protocol endpoints with
Triton's own clients (tritonclient.http and tritonclient.grpc) and prints
what they got as one JSON object, which TestTritonClient compares with the
expected values.

Usage: triton_client.py --http HOST:PORT --grpc HOST:PORT --model NAME
       --examples HEX,HEX  (serialized tf.Examples with x = 1 and x = 5)
"""

import argparse
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

TIMEOUT = 30.0  # seconds, for every call


def error_of(call):
    try:
        call()
    except InferenceServerException as e:
        return {"status": str(e.status()), "message": e.message()}
    return None


def check_http(url, model, examples):
    out = {}
    c = httpclient.InferenceServerClient(url=url, connection_timeout=TIMEOUT, network_timeout=TIMEOUT)
    try:
        out["live"] = c.is_server_live()
        out["ready"] = c.is_server_ready()
        out["model_ready"] = c.is_model_ready(model)
        out["model_ready_123"] = c.is_model_ready(model, "123")
        out["unknown_model_ready"] = c.is_model_ready("nope")
        out["server_metadata"] = c.get_server_metadata()
        out["model_metadata"] = c.get_model_metadata(model)

        x = np.array([[1], [2], [5]], dtype=np.float32)

        # The defaults: input as binary data, every output as binary data.
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        sent = inp._get_tensor().get("parameters", {}).get("binary_data_size")
        res = c.infer(model, [inp], request_id="b1")
        out["binary"] = {"sent_binary_data_size": sent, "y": res.as_numpy("y").tolist(), "response": res.get_response()}

        # JSON both ways.
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=False)
        res = c.infer(model, [inp], model_version="123",
                      outputs=[httpclient.InferRequestedOutput("y", binary_data=False)])
        out["json"] = {"y": res.as_numpy("y").tolist(), "response": res.get_response()}

        # Compressed request and response, with a timeout parameter.
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer(model, [inp], request_compression_algorithm="gzip",
                      response_compression_algorithm="deflate", timeout=10_000_000)
        out["compressed"] = {"y": res.as_numpy("y").tolist()}

        # Another signature by the signature_name parameter.
        inp = httpclient.InferInput("inputs", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer(model, [inp], parameters={"signature_name": "regress_x2_to_y3"})
        out["signature"] = {"outputs": res.as_numpy("outputs").tolist()}

        # BYTES, binary and JSON (the examples are not UTF-8, so JSON
        # only for the output).
        ex = np.array(examples, dtype=np.object_)
        inp = httpclient.InferInput("inputs", [len(examples)], "BYTES")
        inp.set_data_from_numpy(ex)
        res = c.infer(model, [inp], parameters={"signature_name": "regress_x_to_y"},
                      outputs=[httpclient.InferRequestedOutput("outputs", binary_data=False)])
        out["bytes"] = {"outputs": res.as_numpy("outputs").tolist()}

        out["unknown_model"] = error_of(lambda: c.infer("nope", [inp]))
        bad = httpclient.InferInput("x", [2, 1], "FP64")
        bad.set_data_from_numpy(np.array([[1], [2]], dtype=np.float64))
        out["wrong_datatype"] = error_of(lambda: c.infer(model, [bad]))
    finally:
        c.close()
    return out


def check_grpc(url, model, examples):
    out = {}
    c = grpcclient.InferenceServerClient(url=url)
    try:
        out["live"] = c.is_server_live(client_timeout=TIMEOUT)
        out["ready"] = c.is_server_ready(client_timeout=TIMEOUT)
        out["model_ready"] = c.is_model_ready(model, client_timeout=TIMEOUT)
        out["server_metadata"] = c.get_server_metadata(as_json=True, client_timeout=TIMEOUT)
        out["model_metadata"] = c.get_model_metadata(model, as_json=True, client_timeout=TIMEOUT)

        x = np.array([[1], [2], [5]], dtype=np.float32)
        inp = grpcclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer(model, [inp], request_id="g1", client_timeout=TIMEOUT)
        r = res.get_response()
        out["infer"] = {"y": res.as_numpy("y").tolist(), "id": r.id, "model_name": r.model_name,
                        "model_version": r.model_version, "raw_outputs": len(r.raw_output_contents)}

        res = c.infer(model, [inp], model_version="123", outputs=[grpcclient.InferRequestedOutput("y")],
                      client_timeout=TIMEOUT)
        out["infer_version"] = {"y": res.as_numpy("y").tolist()}

        inp = grpcclient.InferInput("inputs", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer(model, [inp], parameters={"signature_name": "regress_x2_to_y3"}, client_timeout=TIMEOUT)
        out["signature"] = {"outputs": res.as_numpy("outputs").tolist()}

        ex = np.array(examples, dtype=np.object_)
        inp = grpcclient.InferInput("inputs", [len(examples)], "BYTES")
        inp.set_data_from_numpy(ex)
        res = c.infer(model, [inp], parameters={"signature_name": "regress_x_to_y"}, client_timeout=TIMEOUT)
        out["bytes"] = {"outputs": res.as_numpy("outputs").tolist()}

        out["unknown_model"] = error_of(lambda: c.infer("nope", [inp], client_timeout=TIMEOUT))
    finally:
        c.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", required=True)
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--examples", required=True)
    a = ap.parse_args()
    examples = [bytes.fromhex(h) for h in a.examples.split(",")]
    out = {"http": check_http(a.http, a.model, examples), "grpc": check_grpc(a.grpc, a.model, examples)}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
