"""Command line: python -m converter {keras,tf1,savedmodel} ... -o BUNDLE."""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .errors import ConversionError  # noqa: E402


def _parser():
    p = argparse.ArgumentParser(
        prog="gotflow convert",
        description="Convert a Python-built model into a gotflow bundle "
                    "(manifest.json, train.pb, infer.pb, weights.safetensors).")
    sub = p.add_subparsers(dest="source", required=True)

    def common(sp):
        sp.add_argument("-o", "--out", required=True, help="bundle directory to write")
        sp.add_argument("--force", action="store_true", help="replace an existing bundle directory")
        sp.add_argument("--metric", action="append", default=[],
                        help="metric: a Keras name, module.py:function, or for tf1 name=tensor (repeatable)")

    k = sub.add_parser("keras", help="a Keras model: a .keras file or module.py:function returning a model")
    k.add_argument("model", help="model.keras, or path/to/module.py:function")
    k.add_argument("--loss", help="Keras loss name (e.g. sparse_categorical_crossentropy), JSON config "
                                  "({\"class_name\": ..., \"config\": ...}) or module.py:function; "
                                  "default: the loss the .keras file was compiled with")
    k.add_argument("--input", action="append", default=[], help="input spec name:dtype:shape, e.g. x:float32:-1,64 "
                                                                  "(only when the model does not declare its inputs)")
    k.add_argument("--label", action="append", default=[], help="label spec name:dtype:shape, e.g. y:int32:-1")
    k.add_argument("--output-names", help="comma-separated names for the model outputs")
    common(k)

    t = sub.add_parser("tf1", help="a TF1-style graph function (SparkFlow build_graph): module.py:function "
                                   "creating placeholders and variables and returning the loss")
    t.add_argument("function", help="path/to/module.py:function")
    t.add_argument("--input", action="append", default=[], help="input placeholder, [name=]tensor (e.g. x:0)")
    t.add_argument("--label", action="append", default=[], help="label placeholder, [name=]tensor")
    t.add_argument("--output", action="append", default=[], help="inference output, [name=]tensor")
    common(t)

    s = sub.add_parser("savedmodel", help="an existing SavedModel to fine-tune (its signature becomes the model)")
    s.add_argument("path", help="SavedModel directory")
    s.add_argument("--signature", default="serving_default", help="signature key (default serving_default)")
    s.add_argument("--loss", required=True, help="Keras loss name, JSON config or module.py:function")
    s.add_argument("--label", action="append", default=[], help="label spec name:dtype:shape, e.g. y:int32:-1")
    s.add_argument("--output", help="signature output to train on (default: the only one)")
    common(s)
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    t0 = time.time()

    def step(msg):
        print(f"[{time.time() - t0:5.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        step("loading TensorFlow")
        from . import bundle
        from .specs import parse_spec
        if args.source == "keras":
            from . import keras_source
            step(f"loading model {args.model}")
            model = keras_source.load_model(args.model)
            step("tracing train and infer graphs")
            parts = keras_source.convert(
                model, loss=args.loss, metrics=args.metric,
                input_specs=[parse_spec(s) for s in args.input] or None,
                label_specs=[parse_spec(s) for s in args.label] or None,
                output_names=args.output_names.split(",") if args.output_names else None,
                source="keras")
        elif args.source == "tf1":
            from . import tf1_source
            step(f"building graph function {args.function}")
            parts = tf1_source.convert(args.function, inputs=args.input, labels=args.label,
                                       outputs=args.output, metrics=args.metric)
        else:
            from . import savedmodel_source
            step(f"loading SavedModel {args.path}")
            parts = savedmodel_source.convert(
                args.path, signature=args.signature, loss=args.loss, metrics=args.metric,
                label_specs=[parse_spec(s) for s in args.label] or None, output=args.output)
        for n in parts.notes:
            print(f"gotflow convert: note: {n}", file=sys.stderr)
        step(f"validating and writing {args.out}")
        bundle.write(parts, args.out, overwrite=args.force)
        nw = sum(int(v.value.size) for v in parts.variables)
        step(f"wrote {args.out}: {len(parts.variables)} variables ({nw} values), "
             f"{len(parts.inputs)} inputs, {len(parts.labels)} labels, {len(parts.outputs)} outputs")
    except ConversionError as e:
        print(f"gotflow convert: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
