"""The digits classifier as a Keras model, for `gotflow convert keras`:

    gotflow convert keras examples/digits/model.py:mlp \
        --loss '{"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}' \
        --metric accuracy -o build/digits
"""

import keras


def _mlp(width, name):
    """64 pixels -> width ReLU -> dropout -> 10 logits."""
    keras.utils.set_random_seed(2024)
    return keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Dense(width, activation="relu", name="hidden"),
        keras.layers.Dropout(0.1, name="dropout"),
        keras.layers.Dense(10, name="logits"),
    ], name=name)


def mlp():
    """64 pixels -> 64 ReLU -> dropout -> 10 logits."""
    return _mlp(64, "digits")


def mlp_wide():
    """mlp with a 128-unit hidden layer: the same search, another bundle."""
    return _mlp(128, "digits_wide")
