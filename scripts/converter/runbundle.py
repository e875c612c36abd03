"""Run a bundle's graphs from Python (used by tests and fixture generators)."""

import json
import os

import numpy as np

from . import safetensors


class LoadedBundle:
    def __init__(self, path):
        import tensorflow as tf
        self.path = path
        with open(os.path.join(path, "manifest.json")) as f:
            self.manifest = json.load(f)
        with open(os.path.join(path, self.manifest["weights"]), "rb") as f:
            self.weights = safetensors.loads(f.read())
        self.graphs = {}
        for key in ("train_graph", "infer_graph", "eval_graph"):
            if key not in self.manifest:
                continue
            gd = tf.compat.v1.GraphDef()
            with open(os.path.join(path, self.manifest[key]), "rb") as f:
                gd.ParseFromString(f.read())
            g = tf.Graph()
            with g.as_default():
                tf.graph_util.import_graph_def(gd, name="")
            self.graphs[key] = g

    def train_step(self, inputs, labels, weights=None):
        """Return dict with loss, grads {name: arr}, metrics, updates."""
        import tensorflow as tf
        w = weights or self.weights
        m = self.manifest
        g = self.graphs["train_graph"]
        feed = {}
        for v in m["variables"]:
            if "train_placeholder" in v:
                feed[v["train_placeholder"]] = w[v["name"]]
        for t in m["inputs"]:
            feed[t["tensor"]] = inputs[t["name"]]
        for t in m["labels"]:
            feed[t["tensor"]] = labels[t["name"]]
        fetch = {"loss": m["loss"]["tensor"]}
        for v in m["variables"]:
            if v.get("gradient"):
                fetch["grad/" + v["name"]] = v["gradient"]
            if v.get("update"):
                fetch["update/" + v["name"]] = v["update"]
        for t in m["metrics"]:
            fetch["metric/" + t["name"]] = t["tensor"]
        with tf.compat.v1.Session(graph=g) as s:
            return s.run(fetch, feed_dict=feed)

    def eval_step(self, inputs, labels, weights=None):
        """Run eval.pb: return dict with loss and metric/<name>. Variables
        are fed at their train placeholders where eval.pb has them."""
        import tensorflow as tf
        w = weights or self.weights
        m = self.manifest
        g = self.graphs["eval_graph"]
        have = {op.name for op in g.get_operations()}
        feed = {}
        for v in m["variables"]:
            ph = v.get("train_placeholder")
            if ph and ph.split(":")[0] in have:
                feed[ph] = w[v["name"]]
        for t in m["inputs"]:
            feed[t["tensor"]] = inputs[t["name"]]
        for t in m["labels"]:
            feed[t["tensor"]] = labels[t["name"]]
        fetch = {"loss": m["loss"]["tensor"]}
        for t in m["metrics"]:
            fetch["metric/" + t["name"]] = t["tensor"]
        with tf.compat.v1.Session(graph=g) as s:
            return s.run(fetch, feed_dict=feed)

    def infer(self, inputs, weights=None):
        import tensorflow as tf
        w = weights or self.weights
        m = self.manifest
        g = self.graphs["infer_graph"]
        feed = {}
        for v in m["variables"]:
            if "infer_placeholder" in v:
                feed[v["infer_placeholder"]] = w[v["name"]]
        for t in m["inputs"]:
            feed[t["tensor"]] = inputs[t["name"]]
        fetch = {t["name"]: t["tensor"] for t in m["outputs"]}
        with tf.compat.v1.Session(graph=g) as s:
            return s.run(fetch, feed_dict=feed)


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / (np.abs(b) + 1e-6))) if a.size else 0.0
