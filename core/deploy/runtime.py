"""Runs exported ONNX files in onnxruntime (CPU) for verification and inspection."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimkit.errors import ExportError

if TYPE_CHECKING:
    import onnx


def session(path: str):  # -> onnxruntime.InferenceSession
    """An onnxruntime CPU session for ``path``, with errors turned into ExportError."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for invalid graphs
        raise ExportError(f"{path}: onnxruntime cannot load the exported model: {exc}") from exc


#: ONNX tensor types of graph inputs -> the numpy type a feed is cast to.
_FEED_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def feed(graph_inputs: list[Any], x: Any, where: str = "model") -> dict[str, np.ndarray]:
    """onnxruntime's feed dict for model inputs ``x`` (one array, positional arrays, or named ones),
    each cast to its graph input's type.

    Raises:
        ExportError: the inputs do not match the graph's (number or names).
    """
    names = [i.name for i in graph_inputs]
    if isinstance(x, dict):
        if set(x) != set(names):
            raise ExportError(f"{where}: graph inputs {names} do not match the input names {sorted(x)}")
        arrays = [x[n] for n in names]
    else:
        arrays = list(x) if isinstance(x, (tuple, list)) else [x]
        if len(arrays) != len(names):
            raise ExportError(f"{where}: expected {len(arrays)} graph input(s), found {names}")
    return {i.name: np.asarray(a).astype(_FEED_TYPES.get(i.type, np.float32), copy=False)
            for i, a in zip(graph_inputs, arrays)}


def run(path: str, x: Any) -> np.ndarray:
    """The first output of the model at ``path`` for inputs ``x`` (one array, positional, or named)."""
    return _run(session(path), path, x)


def run_optimized(path: str, x: Any) -> tuple[np.ndarray, "onnx.ModelProto"]:
    """:func:`run`, and the graph onnxruntime ran (its full optimizations, as
    :func:`slimkit.deploy.inspect.optimized_model` gives it) from the same session: one load and one
    optimization of the model instead of two. The graph's initializers of 1 KB and more hold no data
    (onnxruntime writes them to a side file that is not read back): the graph is for its ops."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="slimkit-optimized-") as tmp:
        try:
            sess, optimized = optimizing_session(path, tmp, weights_apart=True)
        except Exception as exc:
            raise ExportError(f"{path}: onnxruntime cannot load the exported model: {exc}") from exc
        return _run(sess, path, x), onnx.load(optimized, load_external_data=False)


def optimizing_session(path: str, folder: str, level: Any = None, weights_apart: bool = False) -> tuple[Any, str]:
    """An onnxruntime CPU session for ``path`` that writes the graph it optimized (``level``: an
    ``onnxruntime.GraphOptimizationLevel``, all optimizations by default) into ``folder``; returns the
    session and that file's path. ``weights_apart``: initializers of 1 KB and more go to a file beside
    it (the graph file stays small: a ResNet50's is 80 KB instead of 25 MB). onnxruntime's own
    exceptions pass through."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level is None else level
    options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
    options.log_severity_level = 3  # the NCHWc serialization notice
    if weights_apart:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.bin")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]), options.optimized_model_filepath


def _run(sess: Any, path: str, x: Any) -> np.ndarray:
    inputs = feed(sess.get_inputs(), x, path)
    try:
        return np.asarray(sess.run(None, inputs)[0])
    except Exception as exc:
        shapes = {k: v.shape for k, v in inputs.items()}
        raise ExportError(f"{path}: onnxruntime failed on inputs of shapes {shapes}: {exc}") from exc


def initializer_zeros(path: str) -> dict[str, tuple[int, int]]:
    """Initializer name -> (size, number of exact zeros), to check that sparsity survived export."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    out = {}
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        out[init.name] = (int(arr.size), int(np.count_nonzero(arr == 0)))
    return out


def write_qdq(float_path: str, out_path: str, plan: Any, params: dict[str, Any], kernels: dict[str, np.ndarray],
              acts: dict[str, np.ndarray], probe: np.ndarray) -> Any:
    """Loads the float model, inserts Q/DQ (``slimkit.deploy.qdq``), saves it and checks the saved file
    (an invalid one is removed); returns the mapping."""
    import onnx

    from slimkit.deploy.qdq import check_file, insert_qdq

    model, mapping = insert_qdq(onnx.load(float_path), plan, params, kernels, acts, probe, check=False, in_place=True)
    onnx.save(model, out_path)
    del model
    try:
        check_file(out_path)
    except ExportError:
        Path(out_path).unlink(missing_ok=True)
        raise
    return mapping
