"""Small models for the converter tests (module.py:function targets)."""

import keras
import tensorflow as tf


def mlp():
    keras.utils.set_random_seed(7)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3)),
        keras.layers.Dense(3),
    ], name="mlp")


def cnn():
    keras.utils.set_random_seed(11)
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(3, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.4, name="dropout"),
        keras.layers.Dense(3),
    ], name="cnn")


class PyFuncLayer(keras.layers.Layer):
    def call(self, x):
        y = tf.py_function(lambda a: a * 2.0, [x], tf.float32)
        y.set_shape(x.shape)
        return y

    def compute_output_shape(self, input_shape):
        return input_shape


def with_py_function():
    keras.utils.set_random_seed(1)
    inp = keras.Input((4,))
    h = keras.layers.Dense(4)(inp)
    h = PyFuncLayer(name="doubler")(h)
    return keras.Model(inp, keras.layers.Dense(2)(h), name="pyfunc_model")


class RawVariableLayer(keras.layers.Layer):
    def build(self, input_shape):
        self.w = tf.Variable(tf.ones([input_shape[-1], 2]))

    def call(self, x):
        return tf.matmul(x, self.w)


def with_raw_variable():
    inp = keras.Input((4,))
    return keras.Model(inp, RawVariableLayer(name="rawvar")(inp), name="rawvar_model")


def per_sample_loss(y_true, y_pred):
    return tf.reduce_sum(tf.square(y_pred - y_true), axis=-1)


v1 = tf.compat.v1


def tf1_graph(training=True):
    x = v1.placeholder(tf.float32, [None, 5], name="x")
    y = v1.placeholder(tf.int32, [None], name="y")
    init = v1.glorot_uniform_initializer(seed=3)
    w1 = v1.get_variable("hidden/kernel", [5, 7], initializer=init)
    b1 = v1.get_variable("hidden/bias", [7], initializer=v1.constant_initializer(0.1))
    h = tf.nn.relu(tf.matmul(x, w1) + b1)
    if training:
        h = h * 1.0  # a no-op standing in for training-only behaviour
    w2 = v1.get_variable("out/kernel", [7, 3], initializer=init)
    b2 = v1.get_variable("out/bias", [3], initializer=v1.zeros_initializer())
    logits = tf.add(tf.matmul(h, w2), b2, name="logits")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32))
    return {"loss": loss, "outputs": {"logits": logits}, "metrics": {"accuracy": acc}}


def tf1_bad_loss():
    x = v1.placeholder(tf.float32, [None, 2], name="x")
    w = v1.get_variable("w", [2, 1])
    return tf.matmul(x, w)  # not a scalar


def two_inputs():
    keras.utils.set_random_seed(3)
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.Dense(4, activation="relu")(h)
    return keras.Model([a, b], keras.layers.Dense(2)(h), name="two_inputs")


def tf1_dropout_at_inference():
    x = v1.placeholder(tf.float32, [None, 2], name="x")
    y = v1.placeholder(tf.float32, [None, 1], name="y")
    w = v1.get_variable("w", [2, 1])
    out = tf.nn.dropout(tf.matmul(x, w), rate=0.5)
    return {"loss": tf.reduce_mean(tf.square(out - y)), "outputs": {"out": out}}


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.hidden = keras.layers.Dense(5, activation="relu", name="hidden")
        self.out = keras.layers.Dense(2, name="out")

    def call(self, x):
        return self.out(self.hidden(x))


def subclassed():
    keras.utils.set_random_seed(4)
    return Subclassed()


def tf1_dropout_training(training=True):
    """A graph function whose training argument switches dropout on."""
    x = v1.placeholder(tf.float32, [None, 5], name="x")
    y = v1.placeholder(tf.int32, [None], name="y")
    init = v1.glorot_uniform_initializer(seed=5)
    w1 = v1.get_variable("hidden/kernel", [5, 16], initializer=init)
    b1 = v1.get_variable("hidden/bias", [16], initializer=v1.constant_initializer(0.1))
    h = tf.nn.relu(tf.matmul(x, w1) + b1)
    if training:
        h = tf.nn.dropout(h, rate=0.5, seed=9)
    w2 = v1.get_variable("out/kernel", [16, 3], initializer=init)
    logits = tf.matmul(h, w2, name="logits")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32))
    return {"loss": loss, "outputs": {"logits": logits}, "metrics": {"accuracy": acc}}


def tf1_no_training_arg():
    return tf1_graph(training=True)
