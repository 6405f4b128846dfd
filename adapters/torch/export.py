"""ONNX export of a PyTorch model through the TorchScript exporter.

One graph input per model input, named after it (dict keys, ``forward`` parameters, or ``input``), a
dynamic batch axis on each and a dynamic sequence axis on integer inputs; the one output (``output``)
is the tensor slimkit reads (:func:`.inputs.first_tensor`). The TorchScript exporter is deprecated in
favour of torch.export; it is kept because it needs no onnxscript and handles every module the
adapter supports.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from slimkit.data import as_inputs
from slimkit.errors import ExportError

from slimkit.adapters.torch import quant
from slimkit.adapters.torch.inputs import arguments, dynamic_axes, first_tensor, input_names, to_tensors
from slimkit.adapters.torch.isolation import inference


class _FirstTensor(nn.Module):
    """The model with the output slimkit reads (for the exporter), taking named inputs positionally."""

    def __init__(self, model: nn.Module, names: list[str] | None) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: Any) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, args))) if self.names is not None else self.model(*args)
        return first_tensor(out, type(self.model).__name__)


def export_onnx(model: nn.Module, path: str, sample: Any, opset: int, owned: bool) -> None:
    """Writes ``model`` (float, in inference mode) to ``path`` as ONNX; ``owned``: slimkit's own copy
    (a user's model runs with its instrumentation hooks suspended).

    Raises:
        ExportError: the model holds fake-quant sites, or the exporter failed (its message included).
    """
    if quant.has_fake_quant(model):
        raise ExportError(
            f"{type(model).__name__} holds fake-quant sites; export the float model from "
            "without_fake_quant() and let slimkit add the quantization to the ONNX file"
        )
    try:
        with inference(model, suspend_hooks=not owned), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = as_inputs(sample, "sample")
            names = input_names(model, x)
            args, kwargs = arguments(to_tensors(x, model))
            torch.onnx.export(
                _FirstTensor(model, names if kwargs else None), args if not kwargs else
                tuple(kwargs[n] for n in names), path, dynamo=False, input_names=names,
                output_names=["output"], dynamic_axes={**dynamic_axes(names, x), "output": {0: "batch"}},
                opset_version=opset,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
