"""Calls a gotflow server's TF Serving gRPC API with TF Serving's own Python
client (tensorflow-serving-api) and prints what it got as one JSON object.

Usage: grpc_client.py HOST:PORT MODEL
"""

import json
import sys

import grpc
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

TIMEOUT = 30.0


def spec(ms):
    return {"name": ms.name, "version": ms.version.value, "signature_name": ms.signature_name}


def example(x):
    return tf.train.Example(features=tf.train.Features(feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}))


def main():
    addr, model = sys.argv[1], sys.argv[2]
    out = {}
    with grpc.insecure_channel(addr) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        req = predict_pb2.PredictRequest()
        req.model_spec.name = model
        req.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0], [5.0]], dtype=tf.float32))
        resp = stub.Predict(req, timeout=TIMEOUT)
        y = resp.outputs["y"]
        out["predict"] = {
            "model_spec": spec(resp.model_spec),
            "outputs": sorted(resp.outputs.keys()),
            "dtype": tf.dtypes.as_dtype(y.dtype).name,
            "shape": [d.size for d in y.tensor_shape.dim],
            "y": tf.make_ndarray(y).flatten().tolist(),
        }

        req = predict_pb2.PredictRequest()
        req.model_spec.name = model
        req.model_spec.version.value = 123
        req.model_spec.signature_name = "regress_x2_to_y3"
        req.inputs["inputs"].CopyFrom(tf.make_tensor_proto([1.0, 4.0], dtype=tf.float32, shape=[2, 1]))
        req.output_filter.append("outputs")
        resp = stub.Predict(req, timeout=TIMEOUT)
        out["predict_x2"] = {
            "model_spec": spec(resp.model_spec),
            "y3": tf.make_ndarray(resp.outputs["outputs"]).flatten().tolist(),
        }

        req = get_model_metadata_pb2.GetModelMetadataRequest()
        req.model_spec.name = model
        req.metadata_field.append("signature_def")
        resp = stub.GetModelMetadata(req, timeout=TIMEOUT)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        if not resp.metadata["signature_def"].Unpack(sdm):
            raise SystemExit("metadata['signature_def'] is not a SignatureDefMap: " + resp.metadata["signature_def"].type_url)
        sd = sdm.signature_def["serving_default"]
        out["metadata"] = {
            "model_spec": spec(resp.model_spec),
            "type_url": resp.metadata["signature_def"].type_url,
            "methods": {k: v.method_name for k, v in sdm.signature_def.items()},
            "serving_default": {
                "inputs": {k: {"name": v.name, "dtype": tf.dtypes.as_dtype(v.dtype).name, "shape": [d.size for d in v.tensor_shape.dim]} for k, v in sd.inputs.items()},
                "outputs": {k: {"name": v.name, "dtype": tf.dtypes.as_dtype(v.dtype).name, "shape": [d.size for d in v.tensor_shape.dim]} for k, v in sd.outputs.items()},
            },
        }

        req = classification_pb2.ClassificationRequest()
        req.model_spec.name = model
        req.model_spec.signature_name = "classify_x_to_y"
        req.input.example_list.examples.extend([example(1.0), example(2.0)])
        resp = stub.Classify(req, timeout=TIMEOUT)
        out["classify"] = {
            "model_spec": spec(resp.model_spec),
            "classifications": [[{"label": c.label, "score": c.score} for c in cl.classes] for cl in resp.result.classifications],
        }

        req = regression_pb2.RegressionRequest()
        req.model_spec.name = model
        req.model_spec.signature_name = "regress_x_to_y"
        req.input.example_list_with_context.examples.extend([example(1.0), example(2.0)])
        resp = stub.Regress(req, timeout=TIMEOUT)
        out["regress"] = {
            "model_spec": spec(resp.model_spec),
            "values": [r.value for r in resp.result.regressions],
        }

        req = predict_pb2.PredictRequest()
        req.model_spec.name = "no_such_model"
        req.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
        try:
            stub.Predict(req, timeout=TIMEOUT)
            out["unknown_model"] = "OK"
        except grpc.RpcError as e:
            out["unknown_model"] = e.code().name

    json.dump(out, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
