"""Models of the bundle fixtures (see gen_bundles.py)."""

import keras
import tensorflow as tf


def mlp():
    keras.utils.set_random_seed(21)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(10, activation="relu", name="hidden1"),
        keras.layers.Dense(8, activation="tanh", kernel_regularizer=keras.regularizers.L2(1e-3), name="hidden2"),
        keras.layers.Dense(3, name="logits"),
    ], name="mlp")


def finetune_base():
    """A small trained-elsewhere model, exported as a SavedModel and then
    converted for fine-tuning."""
    keras.utils.set_random_seed(24)
    return keras.Sequential([
        keras.Input((6,), name="features"),
        keras.layers.Dense(7, activation="relu", name="hidden"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(3, name="logits"),
    ], name="base")


def cnn():
    keras.utils.set_random_seed(22)
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(name="relu"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dropout(0.3, name="dropout"),
        keras.layers.Dense(3, name="logits"),
    ], name="cnn")


v1 = tf.compat.v1


def tf1_graph():
    """A SparkFlow-style graph function: placeholders, variables, a loss."""
    x = v1.placeholder(tf.float32, [None, 6], name="x")
    y = v1.placeholder(tf.int32, [None], name="y")
    init = v1.glorot_uniform_initializer(seed=23)
    w1 = v1.get_variable("layer1/w", [6, 9], initializer=init)
    b1 = v1.get_variable("layer1/b", [9], initializer=v1.constant_initializer(0.05))
    h = tf.nn.sigmoid(tf.matmul(x, w1) + b1)
    w2 = v1.get_variable("layer2/w", [9, 3], initializer=init)
    b2 = v1.get_variable("layer2/b", [3], initializer=v1.zeros_initializer())
    logits = tf.add(tf.matmul(h, w2), b2, name="logits")
    probs = tf.nn.softmax(logits, name="probs")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="xent")
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32))
    return {"loss": loss, "inputs": {"x": x}, "labels": {"y": y},
            "outputs": {"logits": logits, "probs": probs}, "metrics": {"accuracy": acc}}
