"""ONNX export of a Keras model through tf2onnx.

``tf2onnx.convert.from_keras`` does not understand Keras 3 models, so the model's inference call is
wrapped in a ``tf.function``, frozen (variables *and* captured constants, such as a Normalization
layer's mean, become graph constants; ``from_function`` would leave the latter as extra graph inputs)
and converted with ``from_graph_def``; that path serves tf_keras too. While tracing, two Keras ops
take an exportable form of the same math: grouped convolutions a plain Conv2D with groups (Keras
compiles them with XLA on CPU, which tf2onnx cannot read) and exact GELU ``erf`` instead of ``erfc``
(which ONNX lacks).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from typing import Any, Iterator

from slimkit.data import leaves
from slimkit.errors import ExportError
from slimkit.memory import release_unused


def export_onnx(model: Any, path: str, sample: Any, opset: int, declared: list[Any] | None = None) -> None:
    """Writes ``model`` in inference mode to ``path`` as ONNX, batch axis dynamic.

    One graph input per model input: ``input`` for a single one, else the model's input names; of
    the declared dtype (token ids stay integers) and shape (axes declared None stay dynamic).

    Args:
        model: a built single-output Keras model (TensorFlow backend).
        path: the file to write.
        sample: model inputs (any form of :mod:`slimkit.data`); their shapes and dtypes serve a
            model without declared inputs.
        opset: the ONNX opset; above tf2onnx's highest (18), the graph is written at that one and
            raised with onnx's version converter.
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

    # tf2onnx's conversion is a Keras run's memory peak (the frozen graph, tf2onnx's own graph and the
    # proto at once): garbage and free heap pages go back first
    release_unused(4 * sum(int(math.prod(w.shape)) for w in model.weights))
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
    written = min(opset, max(tf2onnx.constants.OPSET_TO_IR_VERSION))  # tf2onnx 1.17 writes up to 18
    try:
        proto = _convert(tf, tf2onnx, forward, specs, names, written)
        # The traced and frozen graphs are cyclic garbage now, as large as the model: freed before
        # the proto is serialized and checked (two more copies of the weights).
        release_unused(proto.ByteSize())
        if written < opset:
            proto = _raise_opset(onnx, proto, opset, written, name)
        data = proto.SerializeToString()  # fails past protobuf's 2 GiB limit
        # tf2onnx logs some conversion failures and carries on; the checker catches the broken graph.
        # It reads the bytes just made (given the proto, it would serialize another copy of the weights).
        onnx.checker.check_model(data)
    except ExportError:
        raise
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


def _raise_opset(onnx: Any, proto: Any, opset: int, written: int, name: str) -> Any:
    """``proto`` (written by tf2onnx at opset ``written``) converted to ``opset`` by onnx's version
    converter, which rewrites the ops whose definition changed in between."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, opset)
    except Exception as exc:  # the converter raises RuntimeError/ValueError/its C++ errors alike
        raise ExportError(
            f"ONNX export of Keras model {name!r}: tf2onnx writes opsets up to {written} and onnx's version "
            f"converter could not raise the graph to opset {opset} ({type(exc).__name__}: {exc}); "
            f"set export.onnx.opset to {written} or lower"
        ) from exc


def _convert(tf: Any, tf2onnx: Any, forward: Any, specs: list[Any], names: list[str], opset: int) -> Any:
    """The ONNX proto of ``forward``, inputs named ``names`` and the output ``output``."""
    with _exportable_ops(tf):
        concrete = tf.function(forward, input_signature=specs).get_concrete_function()
    graph_def = _frozen_graph_def(tf, tf2onnx, concrete)
    # A concrete function's first inputs are its arguments; captures (variables, constants) follow.
    inputs = [t.name for t in concrete.inputs[:len(specs)]]
    outputs = [t.name for t in concrete.outputs]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            with _optimizers_uncaught(), _protos_synced_once(tf2onnx):
                proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                                          opset=opset)
        except Exception:  # an optimizer failed: convert again, tf2onnx skipping the optimizers that fail
            proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                                      opset=opset)
    for old, new in zip(inputs, names):
        _rename(proto.graph, old, new)
    if len(outputs) == 1:
        _rename(proto.graph, outputs[0], "output")
    return proto


def _frozen_graph_def(tf: Any, tf2onnx: Any, concrete: Any) -> Any:
    """``concrete``'s graph with variables and captured constants as constants, control flow kept.

    ``convert_variables_to_constants_v2`` also builds a callable function from the frozen graph, which
    only its ``.graph`` is read from here: 2-3 s of a ResNet50 export. tf2onnx's large-model path freezes
    with the same converter and returns the graph itself; the public function serves if that is gone.
    """
    freeze = getattr(getattr(tf2onnx, "tf_loader", None), "convert_variables_to_constants_large_model", None)
    if freeze is not None:
        try:
            return freeze(concrete)
        except Exception:  # noqa: BLE001 - a private TensorFlow entry point moved: the public one below
            pass
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Control flow stays While/If (what tf2onnx turns into Loop/If and its RNN rewriters recognise).
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    return frozen.graph.as_graph_def()


@contextlib.contextmanager
def _protos_synced_once(tf2onnx: Any) -> Iterator[None]:
    """tf2onnx's optimizers without their copy of every node into its proto after each of them.

    Each optimizer ends with ``Graph.update_proto``, re-copying every node's attributes, weights included,
    into the node protos: 26 times per conversion, 1.5 s of a ResNet50's. The optimizers read nodes, never
    those protos, and writing the model syncs them once (``make_graph`` starts with ``update_proto``), so
    within ``optimize_graph`` the sync is skipped.
    """
    from tf2onnx import graph as tgraph
    from tf2onnx import optimizer

    sync, optimize = tgraph.Graph.update_proto, optimizer.optimize_graph
    optimizing = [False]

    def update_proto(self: Any, *args: Any, **kwargs: Any) -> None:
        if not optimizing[0]:
            sync(self, *args, **kwargs)

    def optimize_graph(*args: Any, **kwargs: Any) -> Any:
        optimizing[0] = True
        try:
            return optimize(*args, **kwargs)
        finally:
            optimizing[0] = False

    tgraph.Graph.update_proto, optimizer.optimize_graph = update_proto, optimize_graph
    try:
        yield
    finally:
        tgraph.Graph.update_proto, optimizer.optimize_graph = sync, optimize


@contextlib.contextmanager
def _optimizers_uncaught() -> Iterator[None]:
    """tf2onnx without its guard around each graph optimizer.

    By default tf2onnx deep-copies the whole graph, weights included, before each of its dozen optimizers
    and every round of them, to restore it if one fails: 8 of the 25 s of a ResNet50 conversion. Any
    value of ``TF2ONNX_CATCH_ERRORS`` turns the guard off (tf2onnx 1.17 compares the variable's name, not
    its value, with "TRUE"); the caller converts again with the guard if an optimizer fails.
    """
    from tf2onnx import constants

    name = constants.ENV_TF2ONNX_CATCH_ERRORS
    saved = os.environ.get(name)
    os.environ[name] = "FALSE"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _rename(graph: Any, old: str, new: str) -> None:
    """Renames tensor ``old`` (a graph input or output) everywhere in ``graph``."""
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


@contextlib.contextmanager
def _exportable_ops(tf: Any) -> Iterator[None]:
    """Keras' TensorFlow convolution and GELU, traced in forms tf2onnx converts (see the module doc)."""
    try:
        from keras.src.backend.tensorflow import nn as knn
    except ImportError:  # tf_keras alone: its ops need no help
        yield
        return
    conv, gelu = knn.conv, knn.gelu

    def plain_conv(inputs: Any, kernel: Any, strides: Any = 1, padding: str = "valid", data_format: Any = None,
                   dilation_rate: Any = 1) -> Any:
        from keras.src import backend

        fmt = knn._convert_data_format(backend.standardize_data_format(data_format), len(inputs.shape))
        return tf.nn.convolution(inputs, kernel, strides, padding.upper(), data_format=fmt, dilations=dilation_rate)

    def erf_gelu(x: Any, approximate: bool = True) -> Any:
        if approximate:
            return gelu(x, approximate)
        x = tf.convert_to_tensor(x)
        return 0.5 * x * (1.0 + tf.math.erf(x * tf.cast(0.7071067811865476, x.dtype)))

    knn.conv, knn.gelu = plain_conv, erf_gelu
    try:
        yield
    finally:
        knn.conv, knn.gelu = conv, gelu
