"""Runs exported ONNX files in onnxruntime (CPU) for verification and inspection."""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.errors import ExportError


def session(path: str):  # -> onnxruntime.InferenceSession
    """An onnxruntime CPU session for ``path``, with errors turned into ExportError."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for invalid graphs
        raise ExportError(f"{path}: onnxruntime cannot load the exported model: {exc}") from exc


def run(path: str, x: np.ndarray) -> np.ndarray:
    """The first output of the single-input model at ``path`` for input ``x``."""
    sess = session(path)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ExportError(f"{path}: expected one graph input, found {[i.name for i in inputs]}")
    try:
        return np.asarray(sess.run(None, {inputs[0].name: x.astype(np.float32)})[0])
    except Exception as exc:
        raise ExportError(f"{path}: onnxruntime failed on input of shape {x.shape}: {exc}") from exc


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
    """Loads the float model, inserts Q/DQ (``slimkit.deploy.qdq``) and saves it; returns the mapping."""
    import onnx

    from slimkit.deploy.qdq import insert_qdq

    model, mapping = insert_qdq(onnx.load(float_path), plan, params, kernels, acts, probe)
    onnx.save(model, out_path)
    return mapping
