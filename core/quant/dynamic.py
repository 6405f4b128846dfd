"""Post-training dynamic quantization: int8 kernels; activations quantized per batch at run time.

Only kernels get fixed parameters. Each quantized layer's input is quantized on every call with
the range of the whole batch, as onnxruntime's ``DynamicQuantizeLinear`` does, so nothing is
calibrated: this suits dense/linear-heavy models whose activation ranges vary between inputs.
"""

from __future__ import annotations

from slimkit.adapter import ModelAdapter
from slimkit.quant.stage import Prepared, finish, weight_params


def quantize_dynamic(prepared: Prepared) -> tuple[ModelAdapter, dict, dict]:
    """The fake-quant model with fixed kernels and dynamic activation sites.

    Returns:
        ``(model, params, ranges)`` as :func:`slimkit.quant.static.quantize_static` (no ranges).
    """
    params = weight_params(prepared.adapter, prepared.plan, {})
    return finish(prepared.adapter, prepared.plan, params), params, {}
