"""The same network as model.py written as a TF1 graph function (the
SparkFlow build_graph style), for `gotflow convert tf1`:

    gotflow convert tf1 examples/digits/graph.py:build_graph -o build/digits-tf1

With training=True the hidden layer uses dropout; with training=False it
does not, so infer.pb is deterministic.
"""

import tensorflow as tf

v1 = tf.compat.v1


def build_graph(training=True):
    x = v1.placeholder(tf.float32, [None, 64], name="pixels")
    y = v1.placeholder(tf.int32, [None], name="label")
    init = v1.glorot_uniform_initializer(seed=2024)
    w1 = v1.get_variable("hidden/kernel", [64, 64], initializer=init)
    b1 = v1.get_variable("hidden/bias", [64], initializer=v1.zeros_initializer())
    h = tf.nn.relu(tf.matmul(x, w1) + b1)
    if training:
        h = tf.nn.dropout(h, rate=0.1, seed=7)
    w2 = v1.get_variable("logits/kernel", [64, 10], initializer=init)
    b2 = v1.get_variable("logits/bias", [10], initializer=v1.zeros_initializer())
    logits = tf.add(tf.matmul(h, w2), b2, name="logits")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32))
    return {
        "loss": loss,
        "inputs": {"pixels": x},
        "labels": {"label": y},
        "outputs": {"logits": logits, "probabilities": tf.nn.softmax(logits)},
        "metrics": {"accuracy": accuracy},
    }
