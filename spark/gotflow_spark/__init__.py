"""gotflow as a pyspark.ml Estimator and Transformer.

``GotflowModel`` runs a TensorFlow model over a DataFrame with the gotflow
binary (a scalar-iterator Arrow UDF over the feed columns, one ``gotflow
predict --ipc`` process per task); ``GotflowEstimator`` trains a gotflow
bundle in one barrier stage (``gotflow ps`` and ``gotflow worker``
processes, one worker per task) and returns a GotflowModel over the
exported SavedModel. Neither needs TensorFlow in Python: the executors need
the gotflow binary and libtensorflow (see the package README).
"""

from ._binary import BinaryNotFoundError
from ._child import ChildError
from .estimator import GotflowEstimator
from .model import GotflowModel

__all__ = ["GotflowEstimator", "GotflowModel", "BinaryNotFoundError", "ChildError"]
