"""Records Keras optimizer states for the optim package's parity tests
(and the ps package's, which replay them through a cluster).

Run from the repository root with the project's virtualenv:

    .venv/bin/python ps/optim/testdata/record_optimizers.py

It writes ps/optim/testdata/optimizer_parity.json. Each case holds the optimizer
configuration in gotflow's JSON form (the same text optim.ParseConfig
reads), the initial variables, the gradients of every step, the variables
after every step and the optimizer slots after the last step, all float32.
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

STEPS = 6
SHAPES = {"dense/kernel": [3, 4], "dense/bias": [5]}

CASES = [
    ("sgd", {"optimizer": "sgd", "learning_rate": 0.1}),
    ("momentum", {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9}),
    ("nesterov", {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.8, "nesterov": True}),
    ("adam", {"optimizer": "adam", "learning_rate": 0.01}),
    ("adam_amsgrad", {"optimizer": "adam", "learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-6, "amsgrad": True}),
    ("adamw", {"optimizer": "adamw", "learning_rate": 0.01, "weight_decay": 0.1}),
    ("adagrad", {"optimizer": "adagrad", "learning_rate": 0.1}),
    ("rmsprop", {"optimizer": "rmsprop", "learning_rate": 0.01}),
    ("rmsprop_momentum_centered", {"optimizer": "rmsprop", "learning_rate": 0.01, "rho": 0.8, "momentum": 0.5, "centered": True}),
    ("sgd_clipnorm", {"optimizer": "sgd", "learning_rate": 0.1, "clipnorm": 0.5}),
    ("adam_global_clipnorm", {"optimizer": "adam", "learning_rate": 0.01, "global_clipnorm": 0.7}),
    ("sgd_exponential_decay", {"optimizer": "sgd", "learning_rate": 0.1,
                               "schedule": {"type": "exponential_decay", "decay_steps": 2, "decay_rate": 0.5}}),
    ("adam_exponential_staircase", {"optimizer": "adam", "learning_rate": 0.01,
                                    "schedule": {"type": "exponential_decay", "decay_steps": 2, "decay_rate": 0.7, "staircase": True}}),
    ("momentum_cosine_decay", {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9,
                               "schedule": {"type": "cosine_decay", "decay_steps": 4, "alpha": 0.1}}),
    ("sgd_weight_decay", {"optimizer": "sgd", "learning_rate": 0.1, "weight_decay": 0.05}),
    ("adam_cosine_warmup", {"optimizer": "adam", "learning_rate": 0.001,
                            "schedule": {"type": "cosine_decay", "decay_steps": 3, "alpha": 0.2,
                                         "warmup_target": 0.01, "warmup_steps": 2}}),
    ("rmsprop_momentum_clipnorm", {"optimizer": "rmsprop", "learning_rate": 0.01, "momentum": 0.3, "clipnorm": 1.0}),
]


def schedule(cfg):
    lr = cfg["learning_rate"]
    s = cfg.get("schedule")
    if s is None:
        return lr
    if s["type"] == "exponential_decay":
        return keras.optimizers.schedules.ExponentialDecay(
            lr, s["decay_steps"], s["decay_rate"], staircase=s.get("staircase", False))
    if s["type"] == "cosine_decay":
        return keras.optimizers.schedules.CosineDecay(
            lr, s["decay_steps"], alpha=s.get("alpha", 0.0),
            warmup_target=s.get("warmup_target"), warmup_steps=s.get("warmup_steps", 0))
    raise ValueError(s["type"])


def build(cfg):
    common = {k: cfg[k] for k in ("clipnorm", "global_clipnorm", "weight_decay") if k in cfg}
    lr = schedule(cfg)
    name = cfg["optimizer"]
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.get("momentum", 0.0), nesterov=cfg.get("nesterov", False), **common)
    if name == "adam":
        return keras.optimizers.Adam(lr, beta_1=cfg.get("beta_1", 0.9), beta_2=cfg.get("beta_2", 0.999),
                                     epsilon=cfg.get("epsilon", 1e-7), amsgrad=cfg.get("amsgrad", False), **common)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, **common)
    if name == "adagrad":
        return keras.optimizers.Adagrad(lr, **common)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr, rho=cfg.get("rho", 0.9), momentum=cfg.get("momentum", 0.0),
                                        centered=cfg.get("centered", False), **common)
    raise ValueError(name)


def slots(opt, name):
    if name == "sgd":
        return {"momentum": opt.momentums}
    if name in ("adam", "adamw"):
        out = {"momentum": opt._momentums, "velocity": opt._velocities}
        if opt.amsgrad:
            out["velocity_hat"] = opt._velocity_hats
        return out
    if name == "adagrad":
        return {"accumulator": opt._accumulators}
    if name == "rmsprop":
        return {"velocity": opt._velocities, "momentum": opt._momentums, "average_gradient": opt._average_gradients}
    raise ValueError(name)


def flat(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def main():
    rng = np.random.default_rng(20261121)
    out = {"keras": keras.__version__, "tensorflow": tf.__version__, "steps": STEPS, "cases": []}
    for case_name, cfg in CASES:
        names = list(SHAPES)
        init = {n: rng.normal(0, 1, SHAPES[n]).astype(np.float32) for n in names}
        grads = [{n: rng.normal(0, 2, SHAPES[n]).astype(np.float32) for n in names} for _ in range(STEPS)]
        variables = [keras.Variable(init[n], dtype="float32", name=n.replace("/", "_")) for n in names]
        opt = build(cfg)
        after = []
        for g in grads:
            opt.apply([tf.constant(g[n]) for n in names], variables)
            after.append({n: flat(v.numpy()) for n, v in zip(names, variables)})
        slot_values = {}
        for slot, vs in slots(opt, cfg["optimizer"]).items():
            if vs:
                slot_values[slot] = {n: flat(v.numpy()) for n, v in zip(names, vs)}
        out["cases"].append({
            "name": case_name,
            "config": json.dumps(cfg),
            "variables": [{"name": n, "shape": SHAPES[n], "init": flat(init[n])} for n in names],
            "gradients": [{n: flat(g[n]) for n in names} for g in grads],
            "after": after,
            "slots": slot_values,
            "iterations": int(opt.iterations.numpy()),
        })
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optimizer_parity.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print("wrote", path, len(out["cases"]), "cases")


if __name__ == "__main__":
    main()
