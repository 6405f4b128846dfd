"""ONNX export of a Keras model through tf2onnx.

``tf2onnx.convert.from_keras`` does not understand Keras 3 models, so the model's inference call is
wrapped in a ``tf.function`` and converted with ``from_function``; that path serves tf_keras too.
"""

from __future__ import annotations

from typing import Any

from slimkit.data import leaves
from slimkit.errors import ExportError


def export_onnx(model: Any, path: str, sample: Any, opset: int, declared: list[Any] | None = None) -> None:
    """Writes ``model`` in inference mode to ``path`` as ONNX, batch axis dynamic.

    One graph input per model input: ``input`` for a single one, else the model's input names; of
    the declared dtype (token ids stay integers) and shape (axes declared None stay dynamic).

    Args:
        model: a built single-output Keras model (TensorFlow backend).
        path: the file to write.
        sample: model inputs (any form of :mod:`slimkit.data`); their shapes and dtypes serve a
            model without declared inputs.
        opset: the ONNX opset.
        declared: the model's declared inputs (``data.DeclaredInput``), None for a subclassed model.

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

    arrays = leaves(sample)
    if declared is None:
        shapes = [(None, *a.shape[1:]) for a in arrays]
        dtypes = ["float32" if a.dtype.kind == "f" else str(a.dtype) for a in arrays]
    else:
        shapes = [(None, *d.shape[1:]) for d in declared]
        dtypes = [d.dtype for d in declared]
    names = ["input"] if len(shapes) == 1 else (
        [d.name for d in declared] if declared is not None else
        (list(sample) if isinstance(sample, dict) else [f"input_{i}" for i in range(len(shapes))]))
    specs = [tf.TensorSpec(shape, dtype, name=name) for shape, dtype, name in zip(shapes, dtypes, names)]

    def forward(*xs: Any) -> Any:
        x = xs[0] if len(xs) == 1 else (dict(zip(names, xs)) if isinstance(sample, dict) and declared is None
                                       else list(xs))
        return model(x, training=False)  # inference mode: BatchNorm statistics, no dropout

    name = getattr(model, "name", type(model).__name__)
    try:
        proto, _ = tf2onnx.convert.from_function(
            tf.function(forward, input_signature=specs), input_signature=specs, opset=opset
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
