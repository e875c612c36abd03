"""Write testdata/gradients/nograd.pb: a graph (weight placeholder "w",
scalar "loss") whose path from w to the loss runs through Cumprod and
Digamma, two ops without a C++ gradient in TensorFlow's registry.

Run from the repository root:
    .venv/bin/python loader/testdata/gen_gradients.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1
HERE = os.path.dirname(os.path.abspath(__file__))

g = tf.Graph()
with g.as_default():
    x = v1.placeholder(tf.float32, [None, 3], name="x")
    w = v1.placeholder(tf.float32, [3, 3], name="w")
    h = tf.matmul(x, w)
    h = tf.math.cumprod(h, axis=1) + tf.math.digamma(tf.nn.softplus(h) + 1.0)
    tf.reduce_sum(h, name="loss")
os.makedirs(os.path.join(HERE, "gradients"), exist_ok=True)
with open(os.path.join(HERE, "gradients", "nograd.pb"), "wb") as f:
    f.write(g.as_graph_def().SerializeToString())


# differentiable.pb: a frozen two-layer network whose weights are
# placeholders, with a dense-label softmax cross-entropy plus an L2 term, and
# differentiable.expected.json: the loss and gradients tf.GradientTape
# computes for the same function, weights and batch.
import json  # noqa: E402

import numpy as np  # noqa: E402

rng = np.random.RandomState(9)
vals = {
    "w1": rng.randn(4, 5).astype(np.float32) * 0.5,
    "b1": rng.randn(5).astype(np.float32) * 0.1,
    "w2": rng.randn(5, 3).astype(np.float32) * 0.5,
    "b2": rng.randn(3).astype(np.float32) * 0.1,
}
xb = rng.randn(6, 4).astype(np.float32)
yb = np.eye(3, dtype=np.float32)[rng.randint(0, 3, 6)]


def forward(w, x, y):
    h = tf.nn.tanh(tf.matmul(x, w["w1"]) + w["b1"])
    logits = tf.nn.bias_add(tf.matmul(h, w["w2"]), w["b2"])
    xent = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits))
    return xent + 1e-2 * tf.add_n([tf.reduce_sum(tf.square(w[k])) for k in ("w1", "w2")])


g = tf.Graph()
with g.as_default():
    x = v1.placeholder(tf.float32, [None, 4], name="x")
    y = v1.placeholder(tf.float32, [None, 3], name="y")
    w = {k: v1.placeholder(tf.float32, v.shape, name=k) for k, v in vals.items()}
    tf.identity(forward(w, x, y), name="loss")
with open(os.path.join(HERE, "gradients", "differentiable.pb"), "wb") as f:
    f.write(g.as_graph_def().SerializeToString())

wv = {k: tf.constant(v) for k, v in vals.items()}
with tf.GradientTape() as tape:
    tape.watch(list(wv.values()))
    loss = forward(wv, tf.constant(xb), tf.constant(yb))
grads = tape.gradient(loss, wv)


def arr(a):
    a = np.asarray(a)
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.reshape(-1).tolist()}


with open(os.path.join(HERE, "gradients", "differentiable.expected.json"), "w") as f:
    json.dump({"weights": {k: arr(v) for k, v in vals.items()}, "x": arr(xb), "y": arr(yb),
               "loss": float(loss.numpy()), "gradients": {k: arr(v.numpy()) for k, v in grads.items()}}, f, indent=1)
    f.write("\n")
