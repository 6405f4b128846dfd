"""ONNX export of a Keras model through tf2onnx.

``tf2onnx.convert.from_keras`` does not understand Keras 3 models, so the model's inference call is
wrapped in a ``tf.function`` and converted with ``from_function``; that path serves tf_keras too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.errors import ExportError


def export_onnx(model: Any, path: str, sample: np.ndarray, opset: int, cast_to: str | None = None) -> None:
    """Writes ``model`` in inference mode to ``path`` as ONNX, float32 input, batch axis dynamic.

    Args:
        model: a built single-input, single-output Keras model (TensorFlow backend).
        path: the file to write.
        sample: an input batch; only its shape past the batch axis is used.
        opset: the ONNX opset.
        cast_to: dtype the model's input must have (``int32`` for token ids), cast from float32 in
            the graph; None to feed the float32 input as is.

    Raises:
        ExportError: tf2onnx is missing or cannot convert the model.
    """
    try:
        import onnx
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise ExportError(
            f"ONNX export of Keras models needs tensorflow and tf2onnx ({exc}); "
            "install them with: pip install tf2onnx"
        ) from exc

    spec = tf.TensorSpec((None, *sample.shape[1:]), tf.float32, name="input")

    def forward(x: Any) -> Any:
        if cast_to is not None:
            x = tf.cast(x, cast_to)
        return model(x, training=False)  # inference mode: BatchNorm statistics, no dropout

    name = getattr(model, "name", type(model).__name__)
    try:
        proto, _ = tf2onnx.convert.from_function(
            tf.function(forward), input_signature=[spec], opset=opset
        )
        data = proto.SerializeToString()  # fails past protobuf's 2 GiB limit
        # tf2onnx logs some conversion failures and carries on; the checker catches the broken graph.
        onnx.checker.check_model(proto)
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
        f.write(data)
