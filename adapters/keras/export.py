"""ONNX export of a Keras model through tf2onnx.

``tf2onnx.convert.from_keras`` does not understand Keras 3 models, so the model's inference call is
wrapped in a ``tf.function`` and converted with ``from_function``; that path serves tf_keras too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.errors import ExportError


def export_onnx(model: Any, path: str, sample: np.ndarray, opset: int, dtype: Any) -> None:
    """Writes ``model`` in inference mode to ``path`` as ONNX, batch axis dynamic.

    Args:
        model: a built single-input, single-output Keras model (TensorFlow backend).
        path: the file to write.
        sample: an input batch; only its shape past the batch axis is used.
        opset: the ONNX opset.
        dtype: the input dtype (anything ``tf.as_dtype`` takes).

    Raises:
        ExportError: tf2onnx is missing or cannot convert the model.
    """
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise ExportError(
            f"ONNX export of Keras models needs tensorflow and tf2onnx ({exc}); "
            "install them with: pip install tf2onnx"
        ) from exc

    spec = tf.TensorSpec((None, *sample.shape[1:]), tf.as_dtype(dtype), name="input")

    # Binding ``model`` as a default argument keeps the traced function independent of this scope.
    def forward(x: Any, _model: Any = model) -> Any:
        return _model(x, training=False)

    name = getattr(model, "name", type(model).__name__)
    try:
        proto, _ = tf2onnx.convert.from_function(
            tf.function(forward), input_signature=[spec], opset=opset
        )
    except Exception as exc:  # tf2onnx raises many unrelated types; all mean "cannot convert"
        raise ExportError(
            f"ONNX export of Keras model {name!r} ({type(model).__name__}) failed at opset {opset}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if len(proto.graph.output) != 1:
        raise ExportError(
            f"ONNX export of Keras model {name!r}: expected one output, the graph has "
            f"{len(proto.graph.output)}"
        )
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
