"""gotflow's model converter: Python-built models into gotflow bundles.

A bundle is a directory with manifest.json (format gotflow.bundle/v1, schema
in loader/schema/bundle-v1.schema.json), train.pb (a pure function
(weights, inputs, labels) -> (loss, gradients, metrics, state updates)),
infer.pb ((weights, inputs) -> outputs, training behaviour off) and
weights.safetensors (initial values).

Run it as ``gotflow convert`` or ``python -m converter`` with scripts/ on
PYTHONPATH.
"""

from .errors import ConversionError  # noqa: F401
